//! Resolving target names: each address a `name:port` target resolves to becomes a target
//! of its own (with the name's weight), resolved again every `dns.refresh` and at once after
//! a connect failure. A hosts-format file, if configured, is consulted first (read afresh
//! each time), then the system resolver. Until a name first resolves, and whenever it
//! resolves to nothing, the name itself stays the target and the OS resolves it at connect.
//!
//! One task per upstream with names, started for each new snapshot (the previous
//! snapshot's tasks are stopped).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{Resolved, UpstreamSet};

/// What to do when an upstream's names resolve to new addresses: rebuild its targets (and
/// whatever follows them, such as health checks). Returns false once there is nothing left
/// to resolve for (the gateway is gone), which ends the task.
pub type OnResolved = Arc<dyn Fn(&UpstreamSet, &Resolved) -> bool + Send + Sync>;

/// The running resolver tasks.
#[derive(Default)]
pub struct Resolvers {
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Resolvers {
    /// Stops the resolvers of the previous upstream sets and starts one for each of `sets`
    /// that has names, resolving every `refresh` (and at once after a connect failure).
    /// Needs a Tokio runtime.
    pub fn sync<'a>(
        &self,
        sets: impl IntoIterator<Item = &'a Arc<UpstreamSet>>,
        refresh: Duration,
        hosts_file: Option<&str>,
        on_resolved: &OnResolved,
    ) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for t in tasks.drain(..) {
            t.abort();
        }
        for set in sets.into_iter().filter(|s| s.has_names) {
            tasks.push(tokio::spawn(run(
                set.clone(),
                refresh,
                hosts_file.map(str::to_owned),
                on_resolved.clone(),
            )));
        }
    }
}

async fn run(
    set: Arc<UpstreamSet>,
    refresh: Duration,
    hosts_file: Option<String>,
    on_resolved: OnResolved,
) {
    let mut last: Option<Resolved> = None;
    loop {
        let mut resolved = Resolved::new();
        for name in set.names() {
            let addrs = resolve(&name, hosts_file.as_deref()).await;
            resolved.insert(name, addrs);
        }
        if last.as_ref() != Some(&resolved) {
            if !on_resolved(&set, &resolved) {
                return;
            }
            tracing::info!(upstream = %set.name, targets = set.targets().len(), "target names resolved");
            last = Some(resolved);
        }
        tokio::select! {
            () = tokio::time::sleep(refresh) => {}
            () = set.resolve_now.notified() => {}
        }
    }
}

/// The addresses of `name:port`, sorted (so that equal answers compare equal and
/// consistent hashing sees the targets in one order); empty if it does not resolve.
async fn resolve(name_port: &str, hosts_file: Option<&str>) -> Vec<SocketAddr> {
    let Some((host, port)) = name_port.rsplit_once(':') else {
        return Vec::new();
    };
    let Ok(port) = port.parse::<u16>() else {
        return Vec::new();
    };
    let mut addrs: Vec<SocketAddr> = match hosts_file.and_then(|f| from_hosts_file(f, host)) {
        Some(ips) => ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect(),
        None => match tokio::net::lookup_host(name_port).await {
            Ok(found) => found.collect(),
            Err(e) => {
                tracing::debug!(name = name_port, error = %e, "name did not resolve");
                Vec::new()
            }
        },
    };
    addrs.sort();
    addrs.dedup();
    addrs
}

/// The addresses `host` has in a hosts-format file, if it is listed there.
fn from_hosts_file(path: &str, host: &str) -> Option<Vec<IpAddr>> {
    let text = std::fs::read_to_string(path).ok()?;
    let table = parse_hosts(&text);
    table.get(&host.to_ascii_lowercase()).cloned()
}

/// `address name [name...]` per line; `#` starts a comment.
fn parse_hosts(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut table: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in fields {
            table.entry(name.to_ascii_lowercase()).or_default().push(ip);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files_map_names_to_every_address() {
        let t = parse_hosts(
            "# comment\n127.0.0.2 api.test other\n127.0.0.3  API.test # second\nbad line\n::1 v6.test\n",
        );
        assert_eq!(
            t["api.test"],
            vec![
                "127.0.0.2".parse::<IpAddr>().unwrap(),
                "127.0.0.3".parse().unwrap()
            ]
        );
        assert_eq!(t["other"].len(), 1);
        assert_eq!(t["v6.test"], vec!["::1".parse::<IpAddr>().unwrap()]);
        assert!(!t.contains_key("bad"));
    }
}
