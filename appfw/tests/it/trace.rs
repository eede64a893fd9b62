//! `appfw trace`: live lines for real connections made by curl and python3.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    sync::mpsc,
    time::Duration,
};

use crate::testbed::*;

/// Starts `appfw trace ARGS` in the client namespace; returns a receiver of
/// its output lines once it is attached.
pub fn start_trace(bed: &mut Bed, args: &[&str]) -> mpsc::Receiver<String> {
    let mut child = bed
        .in_client(appfw_bin())
        .arg("trace")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting appfw trace");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    bed.adopt(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("appfw trace: {line}");
        }
    });
    // Attached once a probe connection shows up.
    let mut probe = 0;
    wait_for(Duration::from_secs(20), "appfw trace to attach", || {
        probe += 1;
        let _ = bed
            .in_client("/usr/bin/bash")
            .args(["-c", &format!("echo probe > /dev/udp/{SERVER_V4}/9")])
            .status();
        rx.recv_timeout(Duration::from_millis(200)).ok()
    });
    while rx.recv_timeout(Duration::from_millis(300)).is_ok() {}
    rx
}

pub fn next_matching(rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> String {
    wait_for(Duration::from_secs(10), "a matching trace line", || {
        let line = rx.recv_timeout(Duration::from_millis(100)).ok()?;
        pred(&line).then_some(line)
    })
}

#[test]
fn trace_text_names_curl_and_python() {
    let mut bed = Bed::new();
    bed.serve();
    let rx = start_trace(&mut bed, &[]);
    assert!(bed.curl(SERVER_V4, 5.0).status.success());
    let line = next_matching(&rx, |l| l.contains("exe=/usr/bin/curl"));
    assert!(line.starts_with("ebpf | exe=/usr/bin/curl, command=/usr/bin/curl -sS --max-time 5 http://198.51.100.2:8080/, ppid="), "{line}");
    assert!(
        line.contains(", uid=0, proto=tcp, family=02, address=198.51.100.2, port=8080, sport="),
        "{line}"
    );
    assert!(bed.python_get(SERVER_V6, 5.0).status.success());
    let line = next_matching(&rx, |l| l.contains("python"));
    assert!(
        line.contains(&format!(
            "exe={}, command=/usr/bin/python3 -c ",
            python_exe()
        )),
        "{line}"
    );
    assert!(
        line.contains("proto=tcp, family=0A, address=2001:db8::2, port=8080"),
        "{line}"
    );
}

#[test]
fn trace_json_has_every_key_and_the_right_pid() {
    let mut bed = Bed::new();
    bed.serve();
    let rx = start_trace(&mut bed, &["--json"]);
    for (mode, host, port, proto, source) in [
        ("tcp", SERVER_V4, HTTP_PORT, "tcp", "ebpf"),
        ("udp-sendto", SERVER_V6, UDP_PORT, "udp", "ebpf"),
        ("udp-connected", SERVER_V4, UDP_PORT, "udp", "cookie-join"),
    ] {
        let mut client = bed.client(mode, host, port);
        let want = client.report.clone();
        let line = next_matching(&rx, |l| {
            l.contains(&format!("\"pid\":{}", want.pid))
                && l.contains(&format!("\"proto\":\"{proto}\""))
        });
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for key in [
            "exe", "command", "pid", "ppid", "uid", "proto", "family", "saddr", "sport", "daddr",
            "dport", "netns", "source",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
        assert_eq!(v["exe"], python_exe().as_str(), "{line}");
        assert_eq!(v["daddr"], host, "{line}");
        assert_eq!(v["dport"], port, "{line}");
        assert_eq!(v["sport"], want.lport, "{mode}: {line}");
        assert_eq!(v["netns"], want.netns, "{line}");
        assert_eq!(v["source"], source, "{mode}: {line}");
        client.finish();
    }
}
