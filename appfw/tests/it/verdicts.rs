//! What users run: `appfw --blacklist`, `--whitelist`, `--monitor`, in a
//! namespace, against real programs (curl, python3), with the log lines
//! users of the old tool know.

use std::time::{Duration, Instant};

use crate::testbed::*;

fn ok(out: &std::process::Output) -> bool {
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("appfw-test-ok")
}

#[test]
fn blacklisted_curl_cannot_connect_python_can() {
    let mut bed = Bed::new();
    bed.serve();
    let d = Daemon::start(
        &bed,
        &["-b"],
        Some("[global]\nblacklist = [\"/usr/bin/curl\"]\n"),
    );
    assert!(
        !ok(&bed.curl(SERVER_V4, 2.0)),
        "blacklisted curl got through"
    );
    assert!(
        ok(&bed.python_get(SERVER_V4, 5.0)),
        "python3 is not blacklisted and must connect"
    );
    let line = d.wait_trace_line(&["'/usr/bin/curl'", "is in blacklist -> DROP."]);
    // "YYYY-MM-DD HH:MM:SS - '/usr/bin/curl' (or '/usr/bin/curl -sS') is in blacklist -> DROP. ('tcp', ...)"
    assert!(line.contains(" - '/usr/bin/curl' (or '/usr/bin/curl -sS') is in blacklist -> DROP. ('tcp', '198.51.100.1', "), "{line}");
    assert!(line.ends_with(", '198.51.100.2', 8080)"), "{line}");
    assert!(
        !d.trace_text().contains("python3"),
        "python3 was not blocked, so it is not reported"
    );
    let stderr = d.stop();
    assert!(
        stderr.contains("verdict latency over"),
        "exit statistics missing: {stderr}"
    );
}

#[test]
fn blacklist_works_for_ipv6() {
    let mut bed = Bed::new();
    bed.serve();
    let d = Daemon::start(
        &bed,
        &["--blacklist"],
        Some("[global]\nblacklist = [\"/usr/bin/curl\"]\n"),
    );
    assert!(!ok(&bed.curl(SERVER_V6, 2.0)));
    assert!(ok(&bed.python_get(SERVER_V6, 5.0)));
    d.wait_trace_line(&[
        "'/usr/bin/curl'",
        "-> DROP. ('tcp', '2001:db8::1', ",
        "'2001:db8::2', 8080)",
    ]);
}

#[test]
fn reject_makes_blocked_program_fail_at_once() {
    let mut bed = Bed::new();
    bed.serve();
    let d = Daemon::start(
        &bed,
        &["-b"],
        Some("[global]\nblacklist = [\"/usr/bin/curl\"]\naction = \"reject\"\n"),
    );
    for host in [SERVER_V4, SERVER_V6] {
        let start = Instant::now();
        let out = bed.curl(host, 10.0);
        let took = start.elapsed();
        assert!(!out.status.success());
        assert!(
            took < Duration::from_secs(1),
            "rejected curl took {took:?} to fail"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("connect"), "curl said: {err}");
    }
    d.wait_trace_line(&["'/usr/bin/curl'", "is in blacklist -> REJECT."]);
    assert!(ok(&bed.python_get(SERVER_V4, 5.0)));
}

#[test]
fn whitelisted_python_connects_curl_does_not() {
    let mut bed = Bed::new();
    bed.serve();
    // Listed through its symlink: /usr/bin/python3 -> python3.11.
    let d = Daemon::start(
        &bed,
        &["-w"],
        Some("[global]\nwhitelist = [\"/usr/bin/python3\"]\n"),
    );
    assert!(
        ok(&bed.python_get(SERVER_V4, 5.0)),
        "whitelisted python3 must connect"
    );
    assert!(!ok(&bed.curl(SERVER_V4, 2.0)), "curl is not whitelisted");
    let line = d.wait_trace_line(&["'/usr/bin/curl'", "is not in whitelist -> DROP."]);
    assert!(
        line.contains(
            "(or '/usr/bin/curl -sS') is not in whitelist -> DROP. ('tcp', '198.51.100.1', "
        ),
        "{line}"
    );
}

#[test]
fn monitor_accepts_and_reports_both() {
    let mut bed = Bed::new();
    bed.serve();
    let d = Daemon::start(&bed, &["-m"], None);
    assert!(ok(&bed.curl(SERVER_V4, 5.0)));
    assert!(ok(&bed.python_get(SERVER_V4, 5.0)));
    let c = d.wait_trace_line(&["'/usr/bin/curl'", "-> ACCEPT."]);
    assert!(c.contains(" pid=") && c.contains(" ppid="), "{c}");
    d.wait_trace_line(&[
        &format!("'{}'", python_exe()),
        "-> ACCEPT.",
        "'198.51.100.2', 8080)",
    ]);
    // Printed on stdout too when not a daemon.
    let stdout = std::fs::read_to_string(&d.stdout).unwrap();
    assert!(stdout.contains("'/usr/bin/curl'"), "{stdout}");
}

#[test]
fn no_mode_means_monitor_with_builtin_defaults() {
    let mut bed = Bed::new();
    bed.serve();
    // No -c: /etc/appfw/appfw.toml does not exist on test machines, so the
    // built-in defaults apply.
    let d = Daemon::start(&bed, &[], None);
    assert!(
        d.stderr_text().contains("mode monitor"),
        "{}",
        d.stderr_text()
    );
    assert!(ok(&bed.curl(SERVER_V4, 5.0)));
    d.wait_trace_line(&["'/usr/bin/curl'", "-> ACCEPT."]);
}

#[test]
fn command_prefix_entry_matches_first_words() {
    let mut bed = Bed::new();
    bed.serve();
    // python_get runs `/usr/bin/python3 -c ...`: "python3 -c" matches it
    // (the first word names /usr/bin/python3 -> python3.11 through the
    // system's PATH, whatever PATH appfw got), curl stays untouched.
    let d = Daemon::start(
        &bed,
        &["-b"],
        Some("[global]\nblacklist = [\"python3 -c\"]\n"),
    );
    assert!(
        !ok(&bed.python_get(SERVER_V4, 2.0)),
        "python3 -c is blacklisted"
    );
    assert!(ok(&bed.curl(SERVER_V4, 5.0)));
    d.wait_trace_line(&[
        &format!("'{}' (or '/usr/bin/python3 -c')", python_exe()),
        "is in blacklist -> DROP.",
    ]);
}

#[test]
fn sigterm_removes_every_rule() {
    let mut bed = Bed::new();
    bed.serve();
    let d = Daemon::start(&bed, &["-m"], None);
    for v6 in [false, true] {
        let r = rules_in(&bed.client, v6);
        assert!(
            r.contains("-N APPFW") && r.contains("-j APPFW") && r.contains("--queue-bypass"),
            "{r}"
        );
    }
    d.stop();
    for v6 in [false, true] {
        let r = rules_in(&bed.client, v6);
        assert!(!r.contains("APPFW"), "rules left after SIGTERM:\n{r}");
    }
    assert!(ok(&bed.curl(SERVER_V4, 5.0)));
}

#[test]
fn after_sigkill_traffic_flows_and_next_start_cleans_up() {
    let mut bed = Bed::new();
    bed.serve();
    let cfg = "[global]\nblacklist = [\"/usr/bin/curl\"]\n";
    Daemon::start(&bed, &["-b"], Some(cfg)).kill();
    // The rules are still there, but nobody listens: --queue-bypass.
    assert!(rules_in(&bed.client, false).contains("-j APPFW"));
    assert!(
        ok(&bed.curl(SERVER_V4, 5.0)),
        "fail open: traffic must flow while appfw is down"
    );
    let d = Daemon::start(&bed, &["-b"], Some(cfg));
    for v6 in [false, true] {
        let r = rules_in(&bed.client, v6);
        assert_eq!(r.matches("-j APPFW").count(), 1, "duplicated jump:\n{r}");
        assert_eq!(
            r.matches("-j NFQUEUE").count(),
            1,
            "duplicated queue rules:\n{r}"
        );
    }
    assert!(
        !ok(&bed.curl(SERVER_V4, 2.0)),
        "the restarted appfw blocks again"
    );
    d.stop();
}

#[test]
fn fail_closed_blocks_while_no_daemon_runs() {
    let mut bed = Bed::new();
    bed.serve();
    let d = Daemon::start(&bed, &["-m"], Some("[global]\nfail = \"closed\"\n"));
    assert!(!rules_in(&bed.client, false).contains("--queue-bypass"));
    assert!(ok(&bed.curl(SERVER_V4, 5.0)));
    d.kill();
    assert!(
        !ok(&bed.curl(SERVER_V4, 2.0)),
        "fail closed: nothing may pass while appfw is down"
    );
    // A clean stop of the next run removes the rules again.
    Daemon::start(&bed, &["-m"], Some("[global]\nfail = \"closed\"\n")).stop();
    assert!(ok(&bed.curl(SERVER_V4, 5.0)));
}

#[test]
fn blacklisted_udp_datagrams_do_not_arrive() {
    let mut bed = Bed::new();
    bed.serve();
    // bash's /dev/udp is a connected UDP socket; python3 sends unconnected.
    let d = Daemon::start(
        &bed,
        &["-b"],
        Some("[global]\nblacklist = [\"/usr/bin/bash\"]\n"),
    );
    let bash = bed
        .in_client("/usr/bin/bash")
        .args([
            "-c",
            &format!("echo from-bash > /dev/udp/{SERVER_V4}/{UDP_PORT}"),
        ])
        .status()
        .unwrap();
    assert!(bash.success());
    let mut py = bed.client("udp-sendto", SERVER_V4, UDP_PORT);
    wait_for(
        Duration::from_secs(5),
        "python3's datagram at the server",
        || bed.udp_received().contains("appfw-test").then_some(()),
    );
    py.finish();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !bed.udp_received().contains("from-bash"),
        "blacklisted bash's datagram arrived: {}",
        bed.udp_received()
    );
    d.wait_trace_line(&[
        "'/usr/bin/bash'",
        "is in blacklist -> DROP. ('udp', '198.51.100.1', ",
        "'198.51.100.2', 5353)",
    ]);
}

#[test]
fn dns_over_connected_udp_is_judged_like_tcp() {
    let mut bed = Bed::new();
    bed.serve();
    // ip netns exec bind-mounts /etc/netns/NS/resolv.conf over
    // /etc/resolv.conf; the test server answers on 53/udp too.
    let etc = std::path::PathBuf::from(format!("/etc/netns/{}", bed.client));
    std::fs::create_dir_all(&etc).unwrap();
    let _cleanup = RemoveOnDrop(etc.clone());
    std::fs::write(
        etc.join("resolv.conf"),
        format!("nameserver {SERVER_V4}\noptions timeout:1 attempts:1\n"),
    )
    .unwrap();
    bed.serve_dns();
    let d = Daemon::start(
        &bed,
        &["-w"],
        Some(&format!(
            "[global]\nwhitelist = [\"{}\"]\n",
            "/usr/bin/getent"
        )),
    );
    // getent is whitelisted: its query (glibc: a connected UDP socket)
    // reaches the server. python3 is not: its query does not.
    let _ = bed
        .in_client("/usr/bin/getent")
        .args(["hosts", "getent.appfw.test"])
        .output()
        .unwrap();
    wait_for(
        Duration::from_secs(5),
        "getent's DNS query at the server",
        || bed.dns_received().contains("getent").then_some(()),
    );
    let _ = bed
        .in_client(python())
        .args([
            "-c",
            "import socket\ntry: socket.getaddrinfo('python.appfw.test', 80)\nexcept OSError: pass",
        ])
        .output()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !bed.dns_received().contains("python"),
        "python3's query got through: {}",
        bed.dns_received()
    );
    d.wait_trace_line(&[
        &format!("'{}'", python_exe()),
        "is not in whitelist -> DROP. ('udp', '198.51.100.1', ",
        "'198.51.100.2', 53)",
    ]);
}

struct RemoveOnDrop(std::path::PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn crafted_program_name_cannot_forge_a_log_line() {
    let mut bed = Bed::new();
    bed.serve();
    let evil = bed.dir.join("x' -> ACCEPT.\n2026-01-01 00:00:00 - 'ok");
    std::fs::copy(curl(), &evil).unwrap();
    let d = Daemon::start(
        &bed,
        &["-w"],
        Some("[global]\nwhitelist = [\"/usr/bin/python3\"]\n"),
    );
    let out = bed
        .in_client(evil.to_str().unwrap())
        .args([
            "-sS",
            "--max-time",
            "2",
            &format!("http://{SERVER_V4}:{HTTP_PORT}/"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let line = d.wait_trace_line(&["is not in whitelist -> DROP."]);
    assert!(
        line.contains("x\\' -> ACCEPT.\\n2026-01-01 00:00:00 - \\'ok'"),
        "{line}"
    );
    // One report, one line: every line of the file is a whole report.
    for l in d.trace_text().lines() {
        assert!(
            l.len() > 22 && l.as_bytes()[4] == b'-' && l.contains(" - "),
            "forged or broken line: {l:?}"
        );
    }
}

#[test]
fn sighup_reloads_and_keeps_running_config_when_new_one_is_bad() {
    let mut bed = Bed::new();
    bed.serve();
    let d = Daemon::start(
        &bed,
        &["-b"],
        Some("[global]\nblacklist = [\"/usr/bin/curl\"]\n"),
    );
    assert!(!ok(&bed.curl(SERVER_V4, 2.0)));
    // A bad file: reported, the running policy stays.
    write_config(&bed.dir, "[global]\nblacklist = [\"bin/curl\"]\n");
    d.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(5), "the reload error", || {
        d.stderr_text()
            .contains("keeping the running one")
            .then_some(())
    });
    assert!(
        d.stderr_text()
            .contains("appfw.toml:2: key `global.blacklist`"),
        "{}",
        d.stderr_text()
    );
    assert!(
        !ok(&bed.curl(SERVER_V4, 2.0)),
        "the old policy must still apply"
    );
    // The file vanished: an error too, never an empty policy.
    let path = bed.dir.join("appfw.toml");
    std::fs::remove_file(&path).unwrap();
    d.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(5), "the second reload error", || {
        (d.stderr_text().matches("keeping the running one").count() == 2).then_some(())
    });
    assert!(
        d.stderr_text().contains(&format!(
            "configuration file {} does not exist",
            path.display()
        )),
        "{}",
        d.stderr_text()
    );
    assert!(
        !ok(&bed.curl(SERVER_V4, 2.0)),
        "a vanished file must not empty the blacklist"
    );
    write_config(&bed.dir, "[global]\nblacklist = []\n");
    d.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(5), "the reload", || {
        d.stderr_text()
            .contains("configuration reloaded")
            .then_some(())
    });
    assert!(
        ok(&bed.curl(SERVER_V4, 5.0)),
        "curl is no longer blacklisted"
    );
}
