//! The `redis-failover` binary: parse flags and config, start an [`App`], tell systemd
//! when it is ready (see `host/systemd.rs`), reload the TLS certificates on SIGHUP, and
//! stop cleanly on SIGINT or SIGTERM.

use redis_failover::App;
use redis_failover::config::cli;
use redis_failover::host::{logging, systemd};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let program = args.first().map(String::as_str).unwrap_or("redis-failover");
    let parsed = match cli::parse_args(program, args.get(1..).unwrap_or_default()) {
        Ok(parsed) => parsed,
        Err(early) => {
            return if early.status.is_ok() {
                println!("{}", early.output);
                ExitCode::SUCCESS
            } else {
                eprintln!("{}", early.output);
                ExitCode::from(2)
            };
        }
    };
    let config = match parsed.settings().and_then(|s| s.resolve()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("redis-failover: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log_level);
    raise_open_file_limit();
    // Block the signals before any thread starts, so they all inherit the mask and only
    // the main thread receives them (with sigwait below).
    let signals = blocked_signals();
    let app = match App::start(config) {
        Ok(app) => app,
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let service = systemd::Service::start(app.daemon().clone());
    let signal = loop {
        match wait_for(&signals) {
            libc::SIGHUP => reload(&app),
            stop => break stop,
        }
    };
    log::info!("received signal {signal}, shutting down");
    service.stopping();
    app.shutdown();
    log::info!("stopped");
    ExitCode::SUCCESS
}

/// SIGHUP: the TLS certificates and keys read from disk again; a broken file is logged
/// and the old ones stay in use. The watch goes on either way.
fn reload(app: &App) {
    match app.reload_tls() {
        Ok(Some(summary)) => log::info!("SIGHUP: TLS reloaded: {summary}"),
        Ok(None) => log::info!("SIGHUP: TLS is off, there is nothing to reload"),
        Err(e) => log::error!("SIGHUP: {e}"),
    }
}

/// SIGINT and SIGTERM (stop) and SIGHUP (reload).
fn blocked_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; the libc calls only write to it and to this
    // thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for(set: &libc::sigset_t) -> i32 {
    let mut signal = 0;
    // SAFETY: `set` is an initialised signal set and `signal` a valid out-pointer.
    unsafe { while libc::sigwait(set, &mut signal) != 0 {} }
    signal
}

/// Each watched server holds a connection open: lift the soft limit on open files to the
/// hard limit so thousands of groups fit.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the plain struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                log::warn!("cannot raise the open-file limit; thousands of groups may not fit");
            }
        }
    }
}
