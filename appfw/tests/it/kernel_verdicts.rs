//! Verdicts per process in the kernel: a program judged once has its later
//! flows decided without the queue, and that verdict never outlives what it
//! was made for (a reload, an exec). Every check is at the receiving end
//! (the sink) or in the reports, with the queue's and the kernel's counters
//! from `appfw status` showing where flows were decided.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Stdio},
    time::Duration,
};

use crate::testbed::*;

/// A long-lived python3 program, run as the attacker, that for each line
/// `tcp|udp HOST PORT MARKER` on stdin opens a new socket, sends MARKER,
/// closes it, and answers `ok` or `fail ...`.
const SENDER: &str = r#"
import socket, sys
for line in sys.stdin:
    proto, host, port, marker = line.split()
    fam = socket.AF_INET6 if ':' in host else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == 'tcp' else socket.SOCK_DGRAM
    try:
        s = socket.socket(fam, kind)
        s.settimeout(1.5)
        s.connect((host, int(port)))
        s.send(marker.encode())
        s.close()
        print('ok', flush=True)
    except OSError as e:
        print('fail', e, flush=True)
"#;

struct Sender {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Sender {
    fn start(bed: &Bed) -> Sender {
        let mut child = bed
            .as_attacker(python())
            .args(["-c", SENDER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Sender {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends `marker` over a new socket; true when the program saw no error.
    fn send(&mut self, proto: &str, host: &str, port: u16, marker: &str) -> bool {
        writeln!(self.stdin, "{proto} {host} {port} {marker}").unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        answer.starts_with("ok")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `appfw status --json` of the daemon in the bed's client namespace.
fn status(bed: &Bed) -> serde_json::Value {
    let out = bed
        .in_client(appfw_bin())
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (flows decided in the kernel, packets through the queue), from the
/// kernel's counters.
fn decided(bed: &Bed) -> (u64, u64) {
    let s = status(bed);
    (
        s["decided"]["in_kernel"].as_u64().unwrap(),
        s["decided"]["queued"].as_u64().unwrap(),
    )
}

#[test]
fn a_judged_program_s_later_flows_are_decided_in_the_kernel() {
    let mut bed = Bed::new();
    bed.sink();
    let config = format!("[global]\nwhitelist = [\"{}\"]\n", python_exe());
    for kernel_verdicts in [true, false] {
        let args: &[&str] = if kernel_verdicts {
            &["-w"]
        } else {
            &["-w", "--no-kernel-verdicts"]
        };
        let d = Daemon::start(&bed, args, Some(&config));
        let mut sender = Sender::start(&bed);
        let (kernel_before, queued_before) = decided(&bed);
        const FLOWS: usize = 20;
        for i in 0..FLOWS {
            for (proto, host) in [("tcp", SERVER_V4), ("udp", SERVER_V6)] {
                let marker = format!("kv-{kernel_verdicts}-{proto}-{i}");
                assert!(sender.send(proto, host, SINK_PORT, &marker), "{marker}");
                assert!(
                    bed.sink_got(&marker, Duration::from_secs(5)),
                    "{marker} did not arrive (kernel verdicts {kernel_verdicts}): {}",
                    bed.sink_received()
                );
            }
        }
        let (kernel, queued) = decided(&bed);
        let (kernel, queued) = (kernel - kernel_before, queued - queued_before);
        let flows = 2 * FLOWS as u64;
        if kernel_verdicts {
            // The first flow goes through the queue; every later one, of
            // either protocol, gets the process's verdict in the kernel.
            assert!(
                kernel >= flows - 1 && queued <= 4,
                "{flows} flows: {kernel} decided in the kernel, {queued} packets queued"
            );
            // Flows decided in the kernel count for the executable too.
            wait_for(
                Duration::from_secs(5),
                "python's flows in the top talkers",
                || {
                    let s = status(&bed);
                    s["top_talkers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|t| t["exe"] == python_exe().as_str())
                        .filter(|t| t["accepted"].as_u64() >= Some(flows))
                        .map(|_| ())
                },
            );
        } else {
            assert!(
                kernel == 0 && queued >= flows,
                "kernel verdicts off, {flows} flows: {kernel} decided in the kernel, {queued} packets queued"
            );
        }
        drop(sender);
        d.stop();
    }
}

#[test]
fn a_reload_that_blacklists_a_long_lived_program_blocks_its_next_connection() {
    let mut bed = Bed::new();
    bed.sink();
    let path = write_config(&bed.dir, "[global]\nblacklist = []\n");
    let d = Daemon::start(&bed, &["-b", "-c", path.to_str().unwrap()], None);
    let mut sender = Sender::start(&bed);
    for i in 0..200 {
        let marker = format!("before-{i}");
        assert!(
            sender.send("tcp", SERVER_V4, SINK_PORT, &marker),
            "{marker}"
        );
    }
    assert!(bed.sink_got("before-199", Duration::from_secs(5)));
    let (kernel, _) = decided(&bed);
    assert!(
        kernel >= 190,
        "only {kernel} of 200 flows decided in the kernel"
    );

    write_config(
        &bed.dir,
        &format!("[global]\nblacklist = [\"{}\"]\n", python_exe()),
    );
    d.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(5), "the reload", || {
        d.stderr_text()
            .contains("configuration reloaded")
            .then_some(())
    });
    for (proto, host) in [
        ("tcp", SERVER_V4),
        ("udp", SERVER_V4),
        ("tcp", SERVER_V6),
        ("udp", SERVER_V6),
    ] {
        let marker = format!("after-{proto}-{}", host.len());
        sender.send(proto, host, SINK_PORT, &marker);
    }
    std::thread::sleep(Duration::from_secs(2));
    let got = bed.sink_received();
    assert!(
        !got.contains("after-"),
        "a program blacklisted by a reload still got through: {got}"
    );
    // Each blocked flow is reported, the later ones from the kernel.
    wait_for(Duration::from_secs(5), "a report per blocked flow", || {
        let trace = d.trace_text();
        let lines = trace
            .lines()
            .filter(|l| l.contains(&python_exe()) && l.contains("is in blacklist -> DROP."))
            .count();
        (lines >= 4).then_some(())
    });
    drop(sender);
    d.stop();
}

#[test]
fn exec_in_the_same_pid_is_judged_again() {
    let mut bed = Bed::new();
    bed.sink();
    let d = Daemon::start(
        &bed,
        &["-w"],
        Some(&format!(
            "[global]\nwhitelist = [\"{}\"]\naction = \"reject\"\n",
            python_exe()
        )),
    );
    // python (whitelisted) sends, then becomes bash in the same pid, which
    // sends through bash's /dev/tcp.
    let script = format!(
        "import os, socket\n\
         for i in range(3):\n\
         \x20   s = socket.create_connection(('{SERVER_V4}', {SINK_PORT}), timeout=2)\n\
         \x20   s.send(b'python-%d' % i)\n\
         \x20   s.close()\n\
\
         os.execv('/bin/bash', ['bash', '-c', 'echo bash-after-exec > /dev/tcp/{SERVER_V4}/{SINK_PORT}'])\n"
    );
    exec_attack(&bed, &d, &script, "python-2", "bash-after-exec", "bash");
    d.stop();
}

#[test]
fn a_blocked_program_s_repeated_attempts_cost_the_queue_nothing_after_the_first() {
    let mut bed = Bed::new();
    bed.sink();
    let d = Daemon::start(
        &bed,
        &["-b"],
        Some(&format!(
            "[global]\nblacklist = [\"{}\"]\naction = \"reject\"\n",
            python_exe()
        )),
    );
    let mut sender = Sender::start(&bed);
    let (_, queued_before) = decided(&bed);
    const ATTEMPTS: usize = 20;
    for i in 0..ATTEMPTS {
        assert!(
            !sender.send("tcp", SERVER_V4, SINK_PORT, &format!("blocked-{i}")),
            "a rejected connect succeeded"
        );
    }
    let (_, queued) = decided(&bed);
    assert!(
        queued - queued_before <= 3,
        "{ATTEMPTS} blocked attempts sent {} packets to the queue",
        queued - queued_before
    );
    assert!(!bed.sink_received().contains("blocked-"));
    // Every attempt is still reported.
    wait_for(Duration::from_secs(5), "a report per attempt", || {
        let n = d
            .trace_text()
            .lines()
            .filter(|l| l.contains("is in blacklist -> REJECT."))
            .count();
        (n >= ATTEMPTS).then_some(())
    });
    drop(sender);
    d.stop();
}

#[test]
fn monitor_reports_each_destination_once_when_the_kernel_decides() {
    let mut bed = Bed::new();
    bed.sink().serve();
    let d = Daemon::start(&bed, &["-m"], None);
    let mut sender = Sender::start(&bed);
    for i in 0..5 {
        for (proto, port) in [("tcp", SINK_PORT), ("udp", SINK_PORT), ("tcp", HTTP_PORT)] {
            sender.send(proto, SERVER_V4, port, &format!("m-{proto}-{port}-{i}"));
        }
    }
    assert!(bed.sink_got("m-udp-9000-4", Duration::from_secs(5)));
    let (kernel, _) = decided(&bed);
    assert!(
        kernel >= 13,
        "only {kernel} of 15 flows decided in the kernel"
    );
    let pid = format!("pid={}", sender.pid());
    for (proto, port) in [("tcp", SINK_PORT), ("udp", SINK_PORT), ("tcp", HTTP_PORT)] {
        let dest = format!("'{proto}', '{CLIENT_V4}'");
        let end = format!("'{SERVER_V4}', {port})");
        let lines = wait_for(Duration::from_secs(5), "the monitor line", || {
            let trace = d.trace_text();
            let n = trace
                .lines()
                .filter(|l| l.contains(&pid) && l.contains(&dest) && l.ends_with(&end))
                .count();
            (n > 0).then_some(n)
        });
        assert_eq!(lines, 1, "{proto} {port}: {}", d.trace_text());
    }
    drop(sender);
    d.stop();
}

#[test]
fn a_socket_carried_across_exec_is_judged_for_the_program_that_uses_it() {
    let mut bed = Bed::new();
    bed.sink();
    let d = Daemon::start(
        &bed,
        &["-w"],
        Some(&format!(
            "[global]\nwhitelist = [\"{}\"]\naction = \"reject\"\n",
            python_exe()
        )),
    );
    // python (whitelisted) judges one UDP socket by sending from it, opens
    // another, and execs perl (not whitelisted) with both; perl connects
    // each and writes.
    let perl = format!(
        "use Socket; for my $i (0..1) {{ open(my $s, '+<&=', $ARGV[$i]) or die; \
         connect($s, sockaddr_in({SINK_PORT}, inet_aton('{SERVER_V4}'))) or die \"connect: $!\"; \
         syswrite($s, \"perl-after-exec-$i\"); }}"
    );
    let script = format!(
        "import os, socket\n\
         used = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         used.sendto(b'python-before-exec', ('{SERVER_V4}', {SINK_PORT}))\n\
         fresh = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for s in (used, fresh):\n\
         \x20   os.set_inheritable(s.fileno(), True)\n\
         os.execv('/usr/bin/perl', ['perl', '-e', {perl:?}, str(used.fileno()), str(fresh.fileno())])\n"
    );
    exec_attack(
        &bed,
        &d,
        &script,
        "python-before-exec",
        "perl-after-exec",
        "perl",
    );
    d.stop();
}

/// Runs the python `script` as the attacker: whitelisted python's
/// `allowed` marker arrives; `blocked`, sent by the program it exec'd
/// (`program`), does not, and that program is reported.
fn exec_attack(bed: &Bed, d: &Daemon, script: &str, allowed: &str, blocked: &str, program: &str) {
    bed.as_attacker(python())
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(bed.sink_got(allowed, Duration::from_secs(5)), "{allowed}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !bed.sink_received().contains(blocked),
        "{program}, exec'd by whitelisted python, got through: {}",
        bed.sink_received()
    );
    let line = d.wait_trace_line(&["is not in whitelist -> REJECT."]);
    assert!(line.contains(program), "{line}");
}

#[test]
fn a_program_older_than_appfw_gets_kernel_verdicts_too() {
    let mut bed = Bed::new();
    bed.sink();
    // Started first: the kernel never saw it fork or exec.
    let mut sender = Sender::start(&bed);
    assert!(sender.send("tcp", SERVER_V4, SINK_PORT, "before-appfw"));
    let d = Daemon::start(
        &bed,
        &["-w"],
        Some(&format!(
            "[global]\nwhitelist = [\"{}\"]\naction = \"reject\"\n",
            python_exe()
        )),
    );
    let (kernel_before, _) = decided(&bed);
    for i in 0..10 {
        let marker = format!("older-{i}");
        assert!(
            sender.send("udp", SERVER_V4, SINK_PORT, &marker),
            "{marker}"
        );
        assert!(bed.sink_got(&marker, Duration::from_secs(5)), "{marker}");
    }
    let (kernel, _) = decided(&bed);
    assert!(
        kernel - kernel_before >= 9,
        "a program older than appfw: {} of 10 flows decided in the kernel",
        kernel - kernel_before
    );
    drop(sender);
    d.stop();
}
