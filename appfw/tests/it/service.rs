//! appfw as a systemd service: the notification protocol on a test
//! NOTIFY_SOCKET (readiness, watchdog, reload, stop).

use std::{
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use crate::testbed::*;

/// The socket systemd would listen on; the test reads what appfw says.
struct Notify {
    sock: UnixDatagram,
    path: std::path::PathBuf,
}

impl Notify {
    fn new(bed: &Bed) -> Notify {
        let path = bed.dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Notify { sock, path }
    }

    /// The next message within `timeout`, if any.
    fn next(&self, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.sock.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }

    /// Reads messages until one has `line` as a line; returns it and what
    /// came before.
    fn wait_for(&self, line: &str, timeout: Duration) -> (String, Vec<String>) {
        let end = Instant::now() + timeout;
        let mut before = Vec::new();
        while Instant::now() < end {
            if let Some(m) = self.next(end - Instant::now()) {
                if m.lines().any(|l| l == line) {
                    return (m, before);
                }
                before.push(m);
            }
        }
        panic!("no {line} on NOTIFY_SOCKET within {timeout:?}; got {before:?}");
    }
}

#[test]
fn systemd_hears_ready_after_rules_then_watchdog_reload_and_stop() {
    let mut bed = Bed::new();
    bed.serve();
    let notify = Notify::new(&bed);
    let d = Daemon::start_with_env(
        &bed,
        &["-m"],
        Some("[global]\n"),
        &[
            ("NOTIFY_SOCKET", notify.path.as_os_str()),
            // 1 s: checked every 0.5 s, so an idle queue thread (woken once
            // a second) must still count as progress.
            ("WATCHDOG_USEC", "1000000".as_ref()),
        ],
    );
    let (ready, before) = notify.wait_for("READY=1", Duration::from_secs(10));
    // READY=1 promises the firewall is in place: rules in, queue read.
    assert!(
        rules_in(&bed.client, false).contains("APPFW"),
        "READY=1 arrived before the rules were installed"
    );
    assert!(before.is_empty(), "messages before READY=1: {before:?}");
    assert!(ready.contains("STATUS=mode monitor, queue"), "{ready}");
    let curl = bed.curl(SERVER_V4, 5.0);
    assert!(String::from_utf8_lossy(&curl.stdout).contains("appfw-test-ok"));

    // No traffic for 3 s: the watchdog is fed all the same.
    let start = Instant::now();
    let mut fed = 0;
    while start.elapsed() < Duration::from_secs(3) {
        if notify
            .next(Duration::from_millis(200))
            .is_some_and(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        {
            fed += 1;
        }
    }
    assert!(
        fed >= 4,
        "WATCHDOG=1 {fed} times in 3 s of idle, want about 6"
    );

    d.signal(libc::SIGHUP);
    let (reloading, _) = notify.wait_for("RELOADING=1", Duration::from_secs(5));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    notify.wait_for("READY=1", Duration::from_secs(5));

    d.signal(libc::SIGTERM);
    notify.wait_for("STOPPING=1", Duration::from_secs(5));
    let err = d.stop();
    assert!(!err.contains("no progress"), "{err}");
}

#[test]
fn no_watchdog_messages_unless_systemd_asks() {
    let mut bed = Bed::new();
    bed.serve();
    let notify = Notify::new(&bed);
    let d = Daemon::start_with_env(
        &bed,
        &["-m"],
        Some("[global]\n"),
        &[("NOTIFY_SOCKET", notify.path.as_os_str())],
    );
    notify.wait_for("READY=1", Duration::from_secs(10));
    let got = notify.next(Duration::from_secs(2));
    assert!(got.is_none(), "unasked: {got:?}");
    d.stop();
}
