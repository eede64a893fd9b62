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

/// The unit file's value of `key` (its last assignment).
fn unit_setting(key: &str) -> String {
    let unit = include_str!("../../../config/appfw.service");
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .unwrap_or_else(|| panic!("{key}= is not in config/appfw.service"))
        .to_owned()
}

/// What the unit's hardening does to appfw, without systemd (PID 1 here is
/// not systemd, so `systemd-run` cannot start a transient unit): the
/// capability bounding set of `CapabilityBoundingSet=` less `drop`,
/// `NoNewPrivileges=`, and for `ProtectSystem=strict` a file system that is
/// read-only but for `ReadWritePaths=`, /dev, /proc, /sys and the test's
/// own directory (standing in for `PrivateTmp=`).
fn hardened(bed: &Bed, drop: Option<&str>) -> Vec<String> {
    assert_eq!(unit_setting("NoNewPrivileges"), "yes");
    assert_eq!(unit_setting("ProtectSystem"), "strict");
    let caps: Vec<String> = unit_setting("CapabilityBoundingSet")
        .split_whitespace()
        .filter(|c| Some(*c) != drop)
        .map(|c| format!("+{}", c.to_lowercase().trim_start_matches("cap_")))
        .collect();
    let writable = format!("{} {}", unit_setting("ReadWritePaths"), bed.dir.display());
    let script = format!(
        "set -e; for p in {writable}; do mount --bind \"$p\" \"$p\"; done; \
         mount -o remount,bind,ro /; \
         exec setpriv --no-new-privs --inh-caps=-all --ambient-caps=-all --bounding-set=-all,{} \"$@\"",
        caps.join(",")
    );
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn appfw_works_under_the_units_hardening() {
    let mut bed = Bed::new();
    bed.serve();
    let wrapper = hardened(&bed, None);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let d = Daemon::start_under(
        &bed,
        &wrapper,
        &["-b"],
        Some("[global]\nblacklist = [\"/usr/bin/curl\"]\n"),
        &[],
    );
    assert!(
        rules_in(&bed.client, false).contains("APPFW"),
        "rules installed"
    );
    assert!(!bed.curl(SERVER_V4, 1.0).status.success());
    d.wait_trace_line(&["'/usr/bin/curl'", "is in blacklist -> DROP."]);
    let py = bed.python_get(SERVER_V4, 5.0);
    assert!(py.status.success(), "{py:?}");
    let err = d.stop();
    assert!(!err.contains("WARN"), "{err}");
    assert!(
        !rules_in(&bed.client, false).contains("APPFW"),
        "rules removed on stop"
    );
}

/// Owners found through /proc (`--attribution procfs`, and sockets older
/// than appfw) of another user's process: with the unit's capabilities the
/// listed program is named and blocked; without CAP_SYS_PTRACE (its
/// /proc/PID/fd links) or CAP_DAC_READ_SEARCH (its /proc/PID/fd directory,
/// mode 0500) it is an unknown program, and the blacklist lets it through.
#[test]
fn naming_another_users_process_needs_ptrace_and_dac_read_search() {
    let mut bed = Bed::new();
    bed.serve();
    let url = format!("http://{SERVER_V4}:{HTTP_PORT}/");
    let script = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode().strip())";
    let config = format!("[global]\nblacklist = [\"{}\"]\n", python_exe());
    for drop in [None, Some("CAP_SYS_PTRACE"), Some("CAP_DAC_READ_SEARCH")] {
        let wrapper = hardened(&bed, drop);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let d = Daemon::start_under(
            &bed,
            &wrapper,
            &["-b", "--attribution", "procfs"],
            Some(&config),
            &[],
        );
        let nobody = bed
            .in_client("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .args([python(), "-c", script, &url])
            .output()
            .unwrap();
        match drop {
            None => {
                assert!(!nobody.status.success(), "python as nobody got through");
                d.wait_trace_line(&[&format!("'{}'", python_exe()), "is in blacklist -> DROP."]);
            }
            Some(cap) => {
                assert!(
                    nobody.status.success(),
                    "without {cap}, python as nobody was still named and blocked: {}",
                    d.trace_text()
                );
                d.wait_trace_line(&["unknown program (no owner found) -> ACCEPT.", "'tcp'"]);
            }
        }
        d.stop();
    }
}

/// Without CAP_NET_ADMIN (the queue, the rules) or CAP_SYS_ADMIN (mounting
/// tracefs, which `ip netns exec` hides) appfw does not start, and says
/// why.
#[test]
fn without_net_admin_or_sys_admin_appfw_refuses_to_start_and_says_why() {
    let bed = Bed::new();
    for (drop, says) in [
        ("CAP_NET_ADMIN", "appfw needs CAP_NET_ADMIN"),
        ("CAP_SYS_ADMIN", "mounting it at /sys/kernel/tracing failed"),
    ] {
        let wrapper = hardened(&bed, Some(drop));
        let mut cmd = bed.in_client(&wrapper[0]);
        cmd.args(&wrapper[1..])
            .arg(appfw_bin())
            .args(["-m", "--no-rules"]);
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_for(Duration::from_secs(10), "appfw to give up", || {
            child.try_wait().unwrap()
        });
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!status.success(), "appfw ran without {drop}: {err}");
        assert!(err.contains(says), "without {drop}: {err}");
    }
}
