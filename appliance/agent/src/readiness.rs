//! Tells systemd (when it started the agent as a `Type=notify` service) that the agent is ready,
//! what it is doing, and that it is alive (the watchdog). Outside systemd every call is a no-op:
//! `NOTIFY_SOCKET` is unset.
//!
//! Crate `sd-notify`: pure Rust, a datagram to `NOTIFY_SOCKET`, no libsystemd to link (the
//! `systemd` crate needs libsystemd and pkg-config on every build machine for the same three
//! messages). Logs reach the journal through the unit's stdout/stderr, so no journal client either.

use sd_notify::NotifyState;
use std::time::Duration;

/// The agent serves (enrollment or the API): systemd may start what is ordered after it.
pub fn ready(status: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Pings the watchdog at half its interval from the async runtime, so a wedged runtime (not
/// just a dead process) gets the agent restarted.
pub fn spawn_watchdog() {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
        }
    });
}
