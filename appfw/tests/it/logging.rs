//! Where reports go: syslog (-l), daemon mode (-d), --debug on stderr, and
//! the latency histogram at exit.

use std::{
    os::unix::net::UnixDatagram,
    process::{Command, Stdio},
    time::Duration,
};

use crate::testbed::*;

/// Runs `appfw ARGS` in the client namespace with /dev/log pointing at a
/// socket the test reads: in a private mount namespace, /dev is a fresh
/// tmpfs holding only that link, so the machine's /dev is not touched.
fn with_private_syslog(bed: &mut Bed, args: &str) -> (u32, UnixDatagram) {
    let sock_path = bed.dir.join("log.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let script = format!(
        "mount -t tmpfs tmpfs /dev && ln -s {} /dev/log && mknod -m 666 /dev/null c 1 3 && exec ip netns exec {} {} {}",
        sock_path.display(),
        bed.client,
        appfw_bin(),
        args
    );
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // sh execs ip, which execs appfw: the pid is appfw's. The bed kills it
    // if the test fails.
    let pid = child.id();
    bed.adopt(child);
    (pid, sock)
}

#[test]
fn syslog_gets_the_drop_line_with_facility_daemon() {
    let mut bed = Bed::new();
    bed.serve();
    let cfg = write_config(&bed.dir, "[global]\nblacklist = [\"/usr/bin/curl\"]\n");
    let (pid, sock) = with_private_syslog(&mut bed, &format!("-b -l -c {}", cfg.display()));
    // Connections until the rules are in place and the DROP is reported.
    let msg = wait_for(Duration::from_secs(20), "the DROP line in syslog", || {
        let _ = bed.curl(SERVER_V4, 1.0);
        let mut buf = vec![0u8; 4096];
        let n = sock.recv(&mut buf).ok()?;
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        m.contains("is in blacklist -> DROP.").then_some(m)
    });
    // <28>: facility daemon (3) * 8 + severity warning (4).
    assert!(msg.starts_with("<28>"), "{msg}");
    assert!(
        msg.contains(" appfw[") && msg.contains("'/usr/bin/curl'"),
        "{msg}"
    );
    // SAFETY: our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    wait_for(Duration::from_secs(10), "appfw to exit", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Exited: gone, or a zombie until the bed reaps it.
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    });
    assert!(!rules_in(&bed.client, false).contains("APPFW"));
}

#[test]
fn daemon_mode_detaches_writes_pid_file_and_cleans_up() {
    let mut bed = Bed::new();
    bed.serve();
    let cfg = write_config(&bed.dir, "[global]\nblacklist = [\"/usr/bin/curl\"]\n");
    let pid_file = bed.dir.join("appfw.pid");
    let trace = bed.dir.join("d.trace");
    // The parent returns once the daemon runs (or fails, with its reason).
    let out = bed
        .in_client(appfw_bin())
        .args([
            "-d",
            "-b",
            "-c",
            cfg.to_str().unwrap(),
            "-t",
            trace.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "appfw -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // Own session, not a session leader (double fork), no terminal.
    let (sid, tty) = (fields[3].parse::<i32>().unwrap(), fields[4]);
    assert_ne!(sid, pid, "the daemon must not be a session leader");
    assert_eq!(tty, "0", "the daemon must have no controlling terminal");
    assert!(!bed.curl(SERVER_V4, 2.0).status.success());
    wait_for(
        Duration::from_secs(5),
        "the DROP line in the trace file",
        || {
            std::fs::read_to_string(&trace)
                .ok()
                .filter(|t| t.contains("is in blacklist -> DROP."))
                .map(|_| ())
        },
    );
    // SAFETY: the daemon we started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_for(Duration::from_secs(10), "the daemon to exit", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    assert!(!pid_file.exists(), "pid file left behind");
    assert!(!rules_in(&bed.client, false).contains("APPFW"));
}

#[test]
fn daemon_mode_reports_startup_failure() {
    let bed = Bed::new();
    let pid_file = bed.dir.join("appfw.pid");
    let trace = bed.dir.join("second.trace");
    // Queue 65535 bound twice: the second daemon cannot start and says why.
    let first = Daemon::start(&bed, &["-m", "--queue-num", "65535", "--no-rules"], None);
    let out = bed
        .in_client(appfw_bin())
        .args([
            "-d",
            "-m",
            "--queue-num",
            "65535",
            "--no-rules",
            "--pid-file",
            pid_file.to_str().unwrap(),
        ])
        .args(["-t", trace.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NFQUEUE 65535"), "{err}");
    first.stop();
}

#[test]
fn debug_prints_packets_and_kernel_events_and_exit_histogram() {
    let mut bed = Bed::new();
    bed.serve();
    let d = Daemon::start(&bed, &["-m", "--debug"], None);
    for _ in 0..20 {
        assert!(bed.curl(SERVER_V4, 5.0).status.success());
    }
    wait_for(Duration::from_secs(5), "per-packet debug lines", || {
        let e = d.stderr_text();
        (e.matches("source=socket").count() >= 20 && e.contains("exe='/usr/bin/curl'"))
            .then_some(())
    });
    wait_for(Duration::from_secs(5), "the kernel's debug line", || {
        d.stderr_text()
            .contains("appfw: tcp connect pid")
            .then_some(())
    });
    let err = d.stop();
    let summary = err
        .lines()
        .find(|l| l.contains("verdict latency over"))
        .expect("histogram at exit")
        .to_owned();
    // e.g. "verdict latency over 20 packets: p50 41.2 us, ..."
    let count: u64 = summary
        .split("over ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(count >= 20, "{summary}");
    eprintln!("{summary}");
}
