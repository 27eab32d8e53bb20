//! The veto script (`pre_failover_script`): a program run before a replica is
//! promoted, which can stop the failover. It gets the group, the master being replaced
//! and the replica chosen, Sentinel-style:
//!
//! ```text
//! <group> <old-ip> <old-port> <new-ip> <new-port>
//! ```
//!
//! Exit status 0 lets the failover go on. Any other status, death by a signal, or a run
//! longer than `pre_failover_script_timeout` stops the attempt (recorded, with the
//! script's output, and tried again after another window like any stopped attempt). It
//! runs on the failover worker, in a process group of its own that is killed whole at
//! the timeout; its output goes to in-memory files, so a script that prints megabytes
//! or leaves a child holding its stdout cannot block the worker.

use super::notify_script::{
    as_stdio, capture_file, describe_output, describe_status, discard_excess, kill_group,
};
use crate::address::Addr;
use crate::worker::hooks::BeforePromote;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// How often the running script is looked at.
const POLL: Duration = Duration::from_millis(5);

/// The hook that runs `script` (killed after `timeout`).
pub fn hook(script: PathBuf, timeout: Duration) -> BeforePromote {
    log::info!(
        "pre_failover_script {} can veto each failover (timeout {} ms)",
        script.display(),
        timeout.as_millis()
    );
    Box::new(move |group: &str, old: &Addr, new: &Addr| run(&script, timeout, group, old, new))
}

/// Runs the script once: Ok when it exits with status 0, else why not.
pub fn run(
    script: &PathBuf,
    timeout: Duration,
    group: &str,
    old: &Addr,
    new: &Addr,
) -> Result<(), String> {
    let stdout = capture_file(c"pre-failover-stdout");
    let stderr = capture_file(c"pre-failover-stderr");
    let mut child = Command::new(script)
        .args([
            group.to_string(),
            old.host.clone(),
            old.port.to_string(),
            new.host.clone(),
            new.port.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(as_stdio(&stdout))
        .stderr(as_stdio(&stderr))
        .process_group(0)
        .spawn()
        .map_err(|e| format!("pre_failover_script {} cannot start: {e}", script.display()))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                kill_group(&mut child);
                return Err(format!(
                    "pre_failover_script timed out after {} ms{}",
                    timeout.as_millis(),
                    describe_output(&stdout, &stderr)
                ));
            }
            Ok(None) => {
                discard_excess(&stdout);
                discard_excess(&stderr);
                std::thread::sleep(POLL);
            }
            Err(e) => {
                kill_group(&mut child);
                return Err(format!("pre_failover_script: cannot wait for it: {e}"));
            }
        }
    };
    let output = describe_output(&stdout, &stderr);
    if status.success() {
        log::info!("group {group}: pre_failover_script lets the failover to {new} go on{output}");
        return Ok(());
    }
    Err(format!(
        "pre_failover_script {}{output}",
        describe_status(&status)
    ))
}
