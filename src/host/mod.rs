//! What ties the daemon to the host it runs on: systemd's notify protocol and watchdog
//! (`systemd.rs`), the notification script that Sentinel users know as
//! client-reconfig-script (`notify_script.rs`), and logging to stderr (`logging.rs`).

pub mod logging;
pub mod notify_script;
pub mod systemd;
pub mod veto_script;
