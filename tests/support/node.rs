//! node-redis v5's Sentinel client (`createSentinel`), run by `tests/node/failover.js`:
//! it discovers a group's master through a Sentinel (the daemon's port or
//! `redis-server --sentinel`), writes, kills the master with SIGKILL itself, and writes
//! with the same client until a write succeeds. `test-cluster/install-deps.sh` installs
//! node-redis into `tests/node/node_modules` (the version `tests/node/package.json` pins).

use std::path::PathBuf;
use std::process::Command;

/// `tests/node`, where the script and its `node_modules` are.
pub fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// Whether node-redis can run here: `Err` says why not. Without Node.js at all the
/// caller may skip; with Node.js but without node-redis it should fail, since
/// `install-deps.sh` installs it.
pub enum Availability {
    Ready,
    NoNode(String),
    NoPackage(String),
}

pub fn availability() -> Availability {
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Availability::NoNode(format!(
                "`node --version` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Err(e) => return Availability::NoNode(format!("node is not installed: {e}")),
    }
    let package = node_dir().join("node_modules/redis/package.json");
    if package.exists() {
        Availability::Ready
    } else {
        Availability::NoPackage(format!(
            "node-redis is not installed in {}: run `bash test-cluster/install-deps.sh` (npm install there)",
            node_dir().display()
        ))
    }
}

/// What one run of the script printed.
#[derive(Debug, Clone)]
pub struct NodeRun {
    /// From the kill to the first successful write, as the script measured it.
    pub ms: f64,
    /// Write attempts that failed or timed out before that.
    pub tries: u64,
    /// The master's port before and after, as node-redis saw them.
    pub before: u16,
    pub after: u16,
    /// What GET returned after the write.
    pub value: String,
    /// The `ms ...` line.
    pub line: String,
    pub output: String,
}

/// Runs the script against the Sentinel on `sentinel_port`; it kills `master_pid`.
pub fn run_failover(
    sentinel_port: u16,
    group: &str,
    master_pid: u32,
    deadline_ms: u64,
) -> Result<NodeRun, String> {
    let out = Command::new("node")
        .current_dir(node_dir())
        .arg("failover.js")
        .arg(sentinel_port.to_string())
        .arg(group)
        .arg(master_pid.to_string())
        .arg(deadline_ms.to_string())
        .output()
        .map_err(|e| format!("run node: {e}"))?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!(
            "node failover.js failed ({}):\n{output}",
            out.status
        ));
    }
    parse_run(&output).ok_or_else(|| format!("odd output from failover.js:\n{output}"))
}

fn parse_run(output: &str) -> Option<NodeRun> {
    let field = |prefix: &str| {
        output
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_string)
    };
    let line = output.lines().find(|l| l.starts_with("ms "))?.to_string();
    // ms <ms> tries <n> from <old port> to <new port>
    let words: Vec<&str> = line.split_whitespace().collect();
    Some(NodeRun {
        ms: words.get(1)?.parse().ok()?,
        tries: words.get(3)?.parse().ok()?,
        before: words.get(5)?.parse().ok()?,
        after: words.get(7)?.parse().ok()?,
        value: field("value ")?,
        line,
        output: output.to_string(),
    })
}
