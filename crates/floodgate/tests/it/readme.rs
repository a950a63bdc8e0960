//! The README's commands, run as a reader would: the quick start is two commands (the
//! second the one `.ci/run` runs), every `floodgate` command of "Running it" works against
//! the example config, and the minimal configuration validates. (The demo banner's commands
//! are run by demo.rs.)

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::PATIENCE;

const README: &str = include_str!("../../../../README.md");

/// The code blocks (language, lines) of the README section headed `heading`.
fn blocks(heading: &str) -> Vec<(String, Vec<String>)> {
    let start = README
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    let section = &README[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut out = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let body: Vec<String> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .map(str::to_owned)
                .collect();
            out.push((lang.to_owned(), body));
        }
    }
    out
}

/// A command without its trailing comment.
fn command(line: &str) -> &str {
    line.split(" #").next().unwrap_or(line).trim()
}

#[test]
fn the_quick_start_is_two_commands_and_ci_runs_the_second() {
    let quick = blocks("Quick start");
    let commands: Vec<&str> = quick[0].1.iter().map(|l| command(l)).collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert_eq!(commands[0], "cargo run --release -- demo");
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.ci/run"))
        .expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim().starts_with(commands[1])),
        ".ci/run must run {:?}",
        commands[1]
    );
}

#[test]
fn every_command_of_running_it_works_on_the_example() {
    // The example config with its addresses on port 0, where the commands expect it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("examples")).unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/floodgate.yaml"
    ))
    .unwrap()
    .replace("0.0.0.0:8080", "127.0.0.1:0")
    .replace("127.0.0.1:8081", "127.0.0.1:0")
    .replace("127.0.0.1:9901", "127.0.0.1:0");
    std::fs::write(dir.path().join("examples/floodgate.yaml"), example).unwrap();

    let running = blocks("Running it");
    let (_, sh) = running
        .iter()
        .find(|(lang, _)| lang == "sh")
        .expect("sh block");
    let mut seen = Vec::new();
    for line in sh {
        let Some(rest) = command(line).strip_prefix("floodgate ") else {
            continue;
        };
        let verb = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        let shell = format!("{} {rest}", env!("CARGO_BIN_EXE_floodgate"));
        if verb == "run" {
            serves_then_stops(&shell, dir.path());
        } else {
            let out = Command::new("bash")
                .args(["-c", &shell])
                .current_dir(dir.path())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{line}\n{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            match verb.as_str() {
                "validate" => assert!(stdout.contains(": ok ("), "{stdout}"),
                "explain" => assert!(
                    stdout.contains("route:     ") && !stdout.contains("none matches"),
                    "the example request must meet a route: {stdout}"
                ),
                "schema" => {
                    let text = std::fs::read_to_string(dir.path().join("floodgate.schema.json"))
                        .expect("the schema written where the README says");
                    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert!(schema["properties"]["routes"].is_object());
                }
                other => panic!("no check for `floodgate {other}`: add one"),
            }
        }
        seen.push(verb);
    }
    assert_eq!(seen, ["run", "validate", "explain", "schema"]);

    // The minimal configuration, as printed.
    let yaml = running
        .iter()
        .find(|(lang, _)| lang == "yaml")
        .expect("yaml block");
    let path = dir.path().join("minimal.yaml");
    std::fs::write(&path, yaml.1.join("\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `shell` (a `floodgate run`) in `dir` until it says it listens, then stops it with
/// SIGTERM and expects a clean exit.
fn serves_then_stops(shell: &str, dir: &Path) {
    let mut child = Command::new("bash")
        .args(["-c", &format!("exec {shell}")])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(line) if line.contains("\"admin listening\"") => break true,
            Ok(_) => {}
            Err(_) => break false,
        }
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(ready, "`{shell}` did not start");
    assert!(status.success(), "`{shell}` stopped with {status:?}");
}

#[test]
fn the_claims_table_names_tests_that_exist() {
    const CLAIMS: &str = include_str!("../../../../docs/claims.md");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it");
    let mut named = 0;
    for cell in CLAIMS.split('`') {
        let Some((file, test)) = cell.split_once(".rs::") else {
            continue;
        };
        if file.contains(' ') || test.contains(' ') {
            continue;
        }
        let source = std::fs::read_to_string(format!("{dir}/{file}.rs"))
            .unwrap_or_else(|_| panic!("docs/claims.md names {file}.rs, which does not exist"));
        assert!(
            source.contains(&format!("fn {test}(")),
            "docs/claims.md names {file}.rs::{test}, which does not exist"
        );
        named += 1;
    }
    assert!(named > 100, "{named} tests named");
}
