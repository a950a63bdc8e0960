//! Process logs are JSON lines without repeated keys: every gateway a test starts has all
//! its lines checked when it is dropped (support.rs); this checks the checker.

use crate::support::check_log_line;

#[test]
fn the_log_line_check_finds_repeated_keys() {
    assert!(check_log_line(r#"{"level":"INFO","target":"a","address":"b"}"#).is_ok());
    assert!(check_log_line(r#"{"a":{"b":1},"c":[{"b":2},{"b":3}]}"#).is_ok());
    let repeated = r#"{"target":"127.0.0.1:41655","target":"floodgate_proxy::handler"}"#;
    assert!(check_log_line(repeated).unwrap_err().contains("target"));
    assert!(check_log_line(r#"{"a":{"b":1,"b":2}}"#).is_err());
    assert!(check_log_line("not json").is_err());
    assert!(check_log_line(r#"{"a":1} trailing"#).is_err());
}
