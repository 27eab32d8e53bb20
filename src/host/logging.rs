//! A small stderr logger, so journald (or a terminal) gets one timestamped line per event.
//!
//! The level is the `log_level` setting (flag or config key: `error`, `warn`, `info`,
//! `debug`, `trace`, `off`; default `info`). `RUST_LOG`, when set to one of those levels,
//! wins over it: an operator can turn on debug for one run (`Environment=RUST_LOG=debug`
//! in a systemd drop-in) without editing the config. Only this crate's messages are
//! shown at debug and trace. Lines go to stderr, which journald collects.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

struct StderrLogger {
    level: LevelFilter,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // The zookeeper crate logs every reconnect attempt (thousands a second while no
        // server listens) and every watch event at info or error: trace only. The
        // session thread logs what matters.
        if metadata.target().starts_with("zookeeper") {
            return self.level >= LevelFilter::Trace;
        }
        metadata.level() <= self.level
            && (metadata.level() <= Level::Info || metadata.target().starts_with("redis_failover"))
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {:5} {}\n",
            timestamp(SystemTime::now()),
            record.level(),
            record.args()
        );
        // A closed stderr must not take the daemon down.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger once (later calls keep the first one) at `configured`, unless
/// `RUST_LOG` names a level.
pub fn init(configured: LevelFilter) {
    let level = effective_level(configured, std::env::var("RUST_LOG").ok().as_deref());
    if log::set_boxed_logger(Box::new(StderrLogger { level })).is_ok() {
        log::set_max_level(level);
    }
}

/// `RUST_LOG` when it names a level, else the configured one.
pub fn effective_level(configured: LevelFilter, rust_log: Option<&str>) -> LevelFilter {
    rust_log
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(configured)
}

/// `2026-11-25T20:15:00.123Z`, computed without a date library.
pub fn timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_timestamps() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_637_700_123);
        assert_eq!(timestamp(at), "2026-11-25T20:15:00.123Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn rust_log_wins_when_it_names_a_level() {
        use LevelFilter::*;
        assert_eq!(effective_level(Warn, None), Warn);
        assert_eq!(effective_level(Warn, Some("debug")), Debug);
        assert_eq!(effective_level(Warn, Some("my_crate=debug")), Warn);
        assert_eq!(effective_level(Info, Some("")), Info);
    }
}
