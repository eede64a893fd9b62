//! The systemd notification protocol (`Type=notify`): READY=1 once the
//! rules are installed and the queue is bound, RELOADING=1 around a
//! reload, STOPPING=1 on shutdown, and WATCHDOG=1 while the queue thread
//! makes progress. Without `NOTIFY_SOCKET` (not run by systemd) every call
//! does nothing.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    // The service manager not hearing us is worth a line, never a failure:
    // appfw keeps judging packets either way.
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("telling the service manager our state failed: {e}");
    }
}

/// The rules are in and the queue is read: systemd may start what is
/// ordered after appfw.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A SIGHUP reload begins; [`reloaded`] ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn reloaded() {
    send(&[NotifyState::Ready]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Feeds systemd's watchdog from the queue thread's progress counter: the
/// thread bumps it for every packet and, idle, every half second (its
/// receive times out), so a counter that stood still for [`STALL`] means a
/// stuck thread; appfw stops feeding and systemd restarts it.
pub struct Watchdog {
    /// How often [`Watchdog::check`] should run: half the timeout, as
    /// sd_watchdog_enabled(3) advises.
    pub every: Duration,
    last: Option<u64>,
    moved_at: Instant,
    stalled: bool,
}

/// How long the progress counter may stand still: several idle wakeups of
/// the queue thread, so a check that falls between two is no stall.
pub const STALL: Duration = Duration::from_secs(2);

impl Watchdog {
    /// `None` when systemd did not ask for a watchdog (no `WATCHDOG_USEC`,
    /// or it is meant for another process).
    pub fn from_env() -> Option<Watchdog> {
        sd_notify::watchdog_enabled().map(|t| Watchdog::new(t, Instant::now()))
    }

    fn new(timeout: Duration, now: Instant) -> Watchdog {
        Watchdog {
            every: (timeout / 2).max(Duration::from_millis(100)),
            last: None,
            moved_at: now,
            stalled: false,
        }
    }

    /// True while the counter moved within the last [`STALL`].
    fn healthy(&mut self, progress: u64, now: Instant) -> bool {
        if self.last != Some(progress) {
            self.last = Some(progress);
            self.moved_at = now;
        }
        now.duration_since(self.moved_at) < STALL
    }

    /// Sends WATCHDOG=1 while the queue thread makes progress; otherwise
    /// logs once per stall and lets the timeout run out.
    pub fn check(&mut self, progress: u64) {
        if self.healthy(progress, Instant::now()) {
            self.stalled = false;
            send(&[NotifyState::Watchdog]);
        } else if !self.stalled {
            self.stalled = true;
            log::error!(
                "the queue thread made no progress for {STALL:?}: no longer feeding the watchdog, so systemd restarts appfw"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_is_fed_only_while_the_counter_moves() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = Watchdog::new(Duration::from_secs(30), t0);
        assert_eq!(w.every, Duration::from_secs(15));
        assert!(w.healthy(0, at(0)));
        assert!(w.healthy(5, at(500)));
        assert!(
            w.healthy(5, at(1000)),
            "a check between two idle wakeups is no stall"
        );
        assert!(!w.healthy(5, at(2600)), "standing still for 2 s is a stall");
        assert!(!w.healthy(5, at(5000)));
        assert!(w.healthy(6, at(5100)), "progress again feeds again");
    }
}
