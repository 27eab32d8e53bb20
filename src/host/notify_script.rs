//! The notification script: Sentinel's `client-reconfig-script`, run on every
//! `+switch-master` so that whatever clients cannot ask us (a proxy config, a DNS
//! record, a pager) learns the new master.
//!
//! The script gets Sentinel's arguments, so a script written for Sentinel works as is:
//!
//! ```text
//! <group> <leader|observer> start <from-ip> <from-port> <to-ip> <to-port>
//! ```
//!
//! `leader` when this daemon performed the failover, `observer` when it only learned of
//! it (another daemon of the cluster did it).
//!
//! Why a thread of its own, and child processes it only polls: a script is someone
//! else's code and may hang, fail or print megabytes. Failover must not wait on it, so
//! the failover worker and the monitor never touch a script: they publish an event on
//! the [`Events`](crate::observe::events::Events) hub (which never blocks), and this thread starts the script and comes
//! back every few milliseconds to see whether it has ended. A script still running at
//! `notify_script_timeout` is killed with its whole process group (it runs in a group of
//! its own), so the `sleep` or `curl` it started dies too.
//!
//! Queueing, as Sentinel does it: each event gets its own run, started at once, up to
//! [`MAX_RUNNING`] at the same time; more wait in a FIFO queue of at most [`MAX_QUEUED`]
//! (the oldest waiting run is dropped when it overflows). So runs may overlap, also for
//! one group; a script that must see one group's switches in order should take a lock
//! (`flock`). A run that exits with status 1 or dies of a signal (including the
//! timeout's SIGKILL) is retried up to [`MAX_RETRIES`] times, [`RETRY_DELAY`] apart;
//! status 2 or more means "do not retry". Output goes to anonymous in-memory files
//! (no pipes to drain, so a script that leaves a background process holding its stdout
//! cannot hang this thread, and a script that prints a lot is never blocked) and is
//! logged, truncated to [`OUTPUT_LIMIT`] bytes per stream: at info for status 0, at warn
//! otherwise. The files keep at most [`CAPTURE_LIMIT`] bytes: at every poll, whatever a
//! script wrote past that is punched out of the file (its memory freed, its size kept,
//! so the log says how much was discarded). At shutdown, running scripts are killed and
//! queued runs dropped.

use crate::observe::events::Event;
use crate::shutdown::Shutdown;
use crossbeam_channel::{Receiver, select};
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Scripts running at the same time (Sentinel's `SENTINEL_SCRIPT_MAX_RUNNING`).
pub const MAX_RUNNING: usize = 16;
/// Runs waiting to start, beyond which the oldest is dropped (Sentinel's limit).
pub const MAX_QUEUED: usize = 256;
/// Retries of a run that exits with status 1 or dies of a signal (Sentinel's).
pub const MAX_RETRIES: u32 = 10;
/// Time between two tries of one run (Sentinel's).
pub const RETRY_DELAY: Duration = Duration::from_secs(30);
/// Bytes of stdout and of stderr that are logged.
pub const OUTPUT_LIMIT: usize = 2048;
/// Bytes of each stream kept in memory while a script runs; the rest is discarded
/// (counted, not stored). Memory per stream stays under this plus what a script can
/// write in one [`POLL`].
pub const CAPTURE_LIMIT: u64 = 64 * 1024;
/// How often running scripts are checked for their end and their timeout.
const POLL: Duration = Duration::from_millis(10);

/// Sentinel's client-reconfig-script arguments for an event, with its group; `None` for
/// events that run no script.
pub fn reconfig_args(event: &Event) -> Option<(String, Vec<String>)> {
    let Event::SwitchMaster {
        group,
        old,
        new,
        performed_here,
    } = event
    else {
        return None;
    };
    let role = if *performed_here {
        "leader"
    } else {
        "observer"
    };
    let args = vec![
        group.clone(),
        role.to_string(),
        "start".to_string(),
        old.host.clone(),
        old.port.to_string(),
        new.host.clone(),
        new.port.to_string(),
    ];
    Some((group.clone(), args))
}

/// Starts the thread that runs `script` on each `+switch-master` of `events`. It stops,
/// killing the scripts still running, when `shutdown` is triggered.
pub fn spawn(
    script: PathBuf,
    timeout: Duration,
    events: Receiver<Event>,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    log::info!(
        "notify_script {} runs on each failover (timeout {} ms)",
        script.display(),
        timeout.as_millis()
    );
    let runner = Runner {
        script,
        timeout,
        queue: VecDeque::new(),
        running: Vec::new(),
    };
    std::thread::Builder::new()
        .name("notify-script".into())
        .spawn(move || runner.run(&events, &shutdown.signal()))
}

/// One run to do: the script's arguments and how many times it was tried already.
struct Job {
    group: String,
    args: Vec<String>,
    tries: u32,
    not_before: Instant,
}

/// A script that runs now.
struct Running {
    job: Job,
    child: Child,
    started: Instant,
    stdout: Option<File>,
    stderr: Option<File>,
}

/// How a run ended.
enum Ended {
    Exited(ExitStatus),
    TimedOut,
    /// `waitpid` itself failed (should not happen): treated as killed.
    Lost(String),
    Stopping,
}

struct Runner {
    script: PathBuf,
    timeout: Duration,
    queue: VecDeque<Job>,
    running: Vec<Running>,
}

impl Runner {
    fn run(mut self, events: &Receiver<Event>, stop: &Receiver<()>) {
        loop {
            self.start_due();
            let wait = self.next_wake();
            select! {
                recv(events) -> event => match event {
                    Ok(event) => self.on_event(&event),
                    Err(_) => break,
                },
                recv(stop) -> _ => break,
                default(wait) => {}
            }
            self.reap();
        }
        for run in std::mem::take(&mut self.running) {
            self.end(run, Ended::Stopping);
        }
        if !self.queue.is_empty() {
            log::warn!(
                "notify_script: {} run(s) not started: the daemon is stopping",
                self.queue.len()
            );
        }
    }

    fn on_event(&mut self, event: &Event) {
        let Some((group, args)) = reconfig_args(event) else {
            return;
        };
        if self.queue.len() >= MAX_QUEUED
            && let Some(dropped) = self.queue.pop_front()
        {
            log::warn!(
                "group {}: notify_script run ({}) dropped: {MAX_QUEUED} runs already wait",
                dropped.group,
                dropped.args.join(" ")
            );
        }
        self.queue.push_back(Job {
            group,
            args,
            tries: 0,
            not_before: Instant::now(),
        });
    }

    /// Starts the queued runs that are due, oldest first, while fewer than
    /// [`MAX_RUNNING`] run.
    fn start_due(&mut self) {
        let now = Instant::now();
        let mut index = 0;
        while index < self.queue.len() && self.running.len() < MAX_RUNNING {
            if self.queue[index].not_before > now {
                index += 1;
                continue;
            }
            if let Some(job) = self.queue.remove(index) {
                self.start(job);
            }
        }
    }

    fn start(&mut self, job: Job) {
        let stdout = capture_file(c"notify-stdout");
        let stderr = capture_file(c"notify-stderr");
        let mut command = Command::new(&self.script);
        command
            .args(&job.args)
            .stdin(Stdio::null())
            .stdout(as_stdio(&stdout))
            .stderr(as_stdio(&stderr))
            // A group of its own, so the timeout kills what the script started too.
            .process_group(0);
        // SAFETY: runs in the child between fork and exec; prctl is async-signal-safe
        // and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                // Should the daemon die (kill -9), its scripts die with it.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        match command.spawn() {
            Ok(child) => {
                log::debug!(
                    "group {}: notify_script {} {} started (pid {})",
                    job.group,
                    self.script.display(),
                    job.args.join(" "),
                    child.id()
                );
                self.running.push(Running {
                    job,
                    child,
                    started: Instant::now(),
                    stdout,
                    stderr,
                });
            }
            Err(e) => log::warn!(
                "group {}: cannot run notify_script {} {}: {e}",
                job.group,
                self.script.display(),
                job.args.join(" ")
            ),
        }
    }

    /// How long the loop may sleep: briefly while scripts run, else until the next
    /// retry is due (or an event comes).
    fn next_wake(&self) -> Duration {
        if !self.running.is_empty() {
            return POLL;
        }
        let now = Instant::now();
        self.queue
            .iter()
            .map(|job| job.not_before.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(3600))
            .max(Duration::from_millis(1))
    }

    /// Ends the runs whose script has exited or whose time is up.
    fn reap(&mut self) {
        let mut index = 0;
        while index < self.running.len() {
            let run = &mut self.running[index];
            discard_excess(&run.stdout);
            discard_excess(&run.stderr);
            let ended = match run.child.try_wait() {
                Ok(Some(status)) => Some(Ended::Exited(status)),
                Ok(None) if run.started.elapsed() >= self.timeout => Some(Ended::TimedOut),
                Ok(None) => None,
                Err(e) => Some(Ended::Lost(e.to_string())),
            };
            match ended {
                Some(ended) => {
                    let run = self.running.swap_remove(index);
                    self.end(run, ended);
                }
                None => index += 1,
            }
        }
    }

    /// Kills the run if it still runs, logs how it ended with its output, and queues a
    /// retry when Sentinel would retry.
    fn end(&mut self, mut run: Running, ended: Ended) {
        if !matches!(ended, Ended::Exited(_)) {
            kill_group(&mut run.child);
        }
        let took = run.started.elapsed().as_millis();
        discard_excess(&run.stdout);
        discard_excess(&run.stderr);
        let output = describe_output(&run.stdout, &run.stderr);
        let what = format!(
            "group {}: notify_script {} {}",
            run.job.group,
            self.script.display(),
            run.job.args.join(" ")
        );
        let retry = match &ended {
            Ended::Exited(status) if status.success() => {
                log::info!("{what}: exited with status 0 after {took} ms{output}");
                false
            }
            Ended::Exited(status) => {
                let retry = status.code() == Some(1) || status.signal().is_some();
                log::warn!(
                    "{what}: {} after {took} ms{output}",
                    describe_status(status)
                );
                retry
            }
            Ended::TimedOut => {
                log::warn!(
                    "{what}: killed (with its process group) at the notify_script_timeout of {} ms{output}",
                    self.timeout.as_millis()
                );
                true
            }
            Ended::Lost(e) => {
                log::warn!("{what}: cannot wait for it ({e}); killed after {took} ms{output}");
                true
            }
            Ended::Stopping => {
                log::warn!("{what}: killed after {took} ms: the daemon is stopping{output}");
                false
            }
        };
        if !retry {
            return;
        }
        let mut job = run.job;
        if job.tries >= MAX_RETRIES {
            log::warn!(
                "group {}: notify_script given up after {} runs",
                job.group,
                job.tries + 1
            );
            return;
        }
        job.tries += 1;
        job.not_before = Instant::now() + RETRY_DELAY;
        log::warn!(
            "group {}: notify_script will be retried in {} s (retry {} of {MAX_RETRIES})",
            job.group,
            RETRY_DELAY.as_secs(),
            job.tries
        );
        self.queue.push_back(job);
    }
}

/// SIGKILL to the script's process group, then reap the script.
pub(super) fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: plain syscall. The script is not reaped yet, so its pid (which is its
        // process group id) cannot have been reused by another process.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// An anonymous in-memory file for a script's output, or None if the kernel has no
/// `memfd_create` (the output is then discarded).
pub(super) fn capture_file(name: &std::ffi::CStr) -> Option<File> {
    use std::os::fd::FromRawFd;
    // SAFETY: `name` is NUL-terminated; the call returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        log::debug!(
            "memfd_create failed ({}); notify_script output is not logged",
            std::io::Error::last_os_error()
        );
        return None;
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    Some(unsafe { File::from_raw_fd(fd) })
}

/// Frees what a script wrote to `file` beyond [`CAPTURE_LIMIT`] (the file keeps its
/// size, so the total is still known; the bytes past the limit read as zeros).
pub(super) fn discard_excess(file: &Option<File>) {
    use std::os::fd::AsRawFd;
    let Some(file) = file else {
        return;
    };
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = file.metadata() else {
        return;
    };
    let size = meta.len();
    // `blocks` counts 512-byte units in memory: a file punched already is left alone.
    if size <= CAPTURE_LIMIT || meta.blocks() * 512 <= CAPTURE_LIMIT {
        return;
    }
    let (Ok(offset), Ok(length)) = (
        libc::off_t::try_from(CAPTURE_LIMIT),
        libc::off_t::try_from(size - CAPTURE_LIMIT),
    ) else {
        return;
    };
    // SAFETY: plain syscall on a descriptor this thread owns.
    let punched = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            length,
        )
    };
    if punched != 0 {
        log::debug!(
            "notify_script: cannot discard output past {CAPTURE_LIMIT} bytes: {}",
            std::io::Error::last_os_error()
        );
    }
}

pub(super) fn as_stdio(file: &Option<File>) -> Stdio {
    file.as_ref()
        .and_then(|f| f.try_clone().ok())
        .map(Stdio::from)
        .unwrap_or_else(Stdio::null)
}

/// `; stdout: "..."; stderr: "..."` for the streams that hold something.
pub(super) fn describe_output(stdout: &Option<File>, stderr: &Option<File>) -> String {
    let mut text = String::new();
    for (name, file) in [("stdout", stdout), ("stderr", stderr)] {
        let captured = read_captured(file);
        if !captured.is_empty() {
            text.push_str(&format!("; {name}: {captured:?}"));
        }
    }
    text
}

/// The first [`OUTPUT_LIMIT`] bytes written to `file`, trimmed, with a note of the
/// size when there was more.
fn read_captured(file: &Option<File>) -> String {
    use std::os::unix::fs::FileExt;
    let Some(file) = file else {
        return String::new();
    };
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = vec![0u8; OUTPUT_LIMIT.min(total as usize)];
    let n = file.read_at(&mut buf, 0).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    if total as usize > n {
        let discarded = total.saturating_sub(CAPTURE_LIMIT);
        format!(
            "{text} [output truncated: {total} bytes in all, the first {n} logged, {discarded} discarded]"
        )
    } else {
        text
    }
}

pub(super) fn describe_status(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("ended: {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Addr;

    #[test]
    fn sentinel_arguments_for_switch_master_only() {
        let event = Event::SwitchMaster {
            group: "cache".into(),
            old: Addr::parse("10.0.0.1:6379").unwrap(),
            new: Addr::parse("10.0.0.2:6380").unwrap(),
            performed_here: false,
        };
        let (group, args) = reconfig_args(&event).unwrap();
        assert_eq!(group, "cache");
        assert_eq!(
            args.join(" "),
            "cache observer start 10.0.0.1 6379 10.0.0.2 6380"
        );
        let down = Event::MasterDown {
            group: "cache".into(),
            master: Addr::parse("10.0.0.1:6379").unwrap(),
        };
        assert_eq!(reconfig_args(&down), None);
    }

    #[test]
    fn captured_output_is_truncated() {
        use std::io::Write;
        let mut file = capture_file(c"test").unwrap();
        file.write_all(&vec![b'x'; OUTPUT_LIMIT + 10]).unwrap();
        let text = read_captured(&Some(file));
        assert!(
            text.contains(&format!(
                "output truncated: {} bytes in all",
                OUTPUT_LIMIT + 10
            )),
            "{text}"
        );
        assert!(read_captured(&None).is_empty());
    }
}
