//! `[[rule]]` tables, checked where the traffic arrives: a payload a rule
//! allows reaches the sink (or the UDP server), one it blocks never does,
//! and the report line names the rule.

use std::time::Duration;

use crate::{enforcement::send_script, testbed::*};

/// How long a blocked payload gets to (not) arrive.
const GRACE: Duration = Duration::from_millis(1500);

/// A python3 program sending each `(host, port, marker)` over one
/// unconnected UDP socket, in order.
fn sendto_script(sends: &[(&str, u16, &str)]) -> String {
    let fam = if sends[0].0.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    let mut s =
        format!("import socket, time\ns = socket.socket(socket.{fam}, socket.SOCK_DGRAM)\n");
    for (host, port, marker) in sends {
        s.push_str(&format!(
            "s.sendto(b'{marker}', ('{host}', {port}))\ntime.sleep(0.2)\n"
        ));
    }
    s
}

fn run_python(bed: &Bed, script: &str) -> std::process::Output {
    bed.in_client(python())
        .args(["-c", script])
        .output()
        .expect("running python3")
}

#[test]
fn port_rules_allow_one_port_of_a_socket_and_not_another() {
    let mut bed = Bed::new();
    bed.serve();
    bed.sink();
    let py = python_exe();
    let config = format!(
        "[[rule]]\nname = \"sink over udp\"\nexe = \"{py}\"\nproto = \"udp\"\nport = {SINK_PORT}\naction = \"accept\"\n\n\
         [[rule]]\nexe = \"{py}\"\nport = \"{HTTP_PORT}-{HTTP_PORT}\"\naction = \"accept\"\n"
    );
    let d = Daemon::start(&bed, &["-w"], Some(&config));
    // One UDP socket, three destinations: the socket's first verdict must
    // not be taken for the other port.
    let out = run_python(
        &bed,
        &sendto_script(&[
            (SERVER_V4, SINK_PORT, "rule-udp-allowed-1"),
            (SERVER_V4, UDP_PORT, "rule-udp-blocked"),
            (SERVER_V4, SINK_PORT, "rule-udp-allowed-2"),
        ]),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        bed.sink_got("rule-udp-allowed-2", Duration::from_secs(5)),
        "the rule's port did not get the payload: {}",
        bed.sink_received()
    );
    assert!(bed.sink_received().contains("rule-udp-allowed-1"));
    std::thread::sleep(GRACE);
    assert!(
        !bed.udp_received().contains("rule-udp-blocked"),
        "a port no rule allows got the payload: {}",
        bed.udp_received()
    );
    d.wait_trace_line(&["is not in whitelist -> DROP", &format!("{UDP_PORT})")]);
    // TCP: the rule's port answers, the sink's port (UDP only) does not.
    let got = bed.python_get(SERVER_V4, 5.0);
    assert!(got.status.success(), "{got:?}");
    assert!(!got.stdout.is_empty(), "no answer from the allowed port");
    let out = run_python(&bed, &send_script("tcp", SERVER_V4, "rule-tcp-blocked"));
    assert!(!out.status.success(), "the TCP send should time out");
    std::thread::sleep(GRACE);
    assert!(!bed.sink_received().contains("rule-tcp-blocked"));
    drop(d);
}

#[test]
fn address_rules_match_networks_v4_and_v6() {
    let mut bed = Bed::new();
    bed.sink();
    let config = "[[rule]]\nname = \"no v4 tcp\"\naddr = \"198.51.100.0/24\"\nproto = \"tcp\"\naction = \"reject\"\n\n\
                  [[rule]]\naddr = \"2001:db8::/32\"\nproto = \"udp\"\naction = \"drop\"\n";
    let d = Daemon::start(&bed, &["-b"], Some(config));
    for (proto, host, allowed) in [
        ("tcp", SERVER_V6, true),
        ("udp", SERVER_V4, true),
        ("tcp", SERVER_V4, false),
        ("udp", SERVER_V6, false),
    ] {
        let marker = format!("cidr-{proto}-{}", host.len());
        let _ = run_python(&bed, &send_script(proto, host, &marker));
        if allowed {
            assert!(
                bed.sink_got(&marker, Duration::from_secs(5)),
                "{proto} to {host} matches no rule and should arrive: {}",
                bed.sink_received()
            );
        } else {
            std::thread::sleep(GRACE);
            assert!(
                !bed.sink_received().contains(&marker),
                "{proto} to {host} should be blocked by its rule"
            );
        }
    }
    let py = python_exe();
    d.wait_trace_line(&[
        &format!("'{py}'"),
        "matches rule no v4 tcp -> REJECT.",
        &format!("'{SERVER_V4}', {SINK_PORT})"),
    ]);
    d.wait_trace_line(&[
        "matches rule #2 -> DROP.",
        &format!("('udp', '{CLIENT_V6}'"),
    ]);
}

#[test]
fn user_rules_block_one_user_and_not_another() {
    let mut bed = Bed::new();
    bed.sink();
    let d = Daemon::start(
        &bed,
        &["-b"],
        Some("[[rule]]\nuser = \"nobody\"\nport = 9000\naction = \"drop\"\n"),
    );
    let out = bed
        .as_attacker(python())
        .args(["-c", &send_script("udp", SERVER_V4, "user-nobody")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let _ = run_python(&bed, &send_script("udp", SERVER_V4, "user-root"));
    assert!(
        bed.sink_got("user-root", Duration::from_secs(5)),
        "root matches no rule: {}",
        bed.sink_received()
    );
    std::thread::sleep(GRACE);
    assert!(
        !bed.sink_received().contains("user-nobody"),
        "uid {ATTACKER_UID} got through its rule"
    );
    let line = d.wait_trace_line(&["matches rule #1 -> DROP."]);
    assert!(line.contains(&format!("'{}'", python_exe())), "{line}");
}

#[test]
fn monitor_accepts_and_reports_what_rules_would_do() {
    let mut bed = Bed::new();
    bed.sink();
    let py = python_exe();
    let d = Daemon::start(
        &bed,
        &["-m"],
        Some(&format!(
            "[[rule]]\nname = \"dry\"\nexe = \"{py}\"\nport = {SINK_PORT}\naction = \"reject\"\n"
        )),
    );
    let out = run_python(&bed, &send_script("tcp", SERVER_V4, "monitor-dry-run"));
    assert!(out.status.success(), "{out:?}");
    assert!(
        bed.sink_got("monitor-dry-run", Duration::from_secs(5)),
        "monitor mode must accept what a rule would block"
    );
    let line = d.wait_trace_line(&[
        &format!("'{py}'"),
        "matches rule dry, would REJECT -> ACCEPT.",
    ]);
    assert!(
        line.ends_with(&format!("'{SERVER_V4}', {SINK_PORT})")),
        "{line}"
    );
}

#[test]
fn sighup_reloads_rules() {
    let mut bed = Bed::new();
    bed.sink();
    let d = Daemon::start(
        &bed,
        &["-b"],
        Some("[[rule]]\nproto = \"udp\"\naction = \"drop\"\n"),
    );
    let _ = run_python(&bed, &send_script("udp", SERVER_V4, "reload-before"));
    std::thread::sleep(GRACE);
    assert!(!bed.sink_received().contains("reload-before"));
    write_config(
        &bed.dir,
        "[[rule]]\nproto = \"udp\"\nport = 1\naction = \"drop\"\n",
    );
    d.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(5), "the reload", || {
        d.stderr_text()
            .contains("configuration reloaded")
            .then_some(())
    });
    let _ = run_python(&bed, &send_script("udp", SERVER_V4, "reload-after"));
    assert!(
        bed.sink_got("reload-after", Duration::from_secs(5)),
        "the reloaded rule no longer matches this port"
    );
}

#[test]
fn a_rule_by_destination_gives_a_process_no_verdict_for_its_other_sockets() {
    // The kernel keeps a judged process's verdict for its later sockets;
    // a verdict a port rule made must not be taken for another port.
    let mut bed = Bed::new();
    bed.serve();
    bed.sink();
    let py = python_exe();
    let d = Daemon::start(
        &bed,
        &["-w"],
        Some(&format!(
            "[[rule]]\nexe = \"{py}\"\nport = {HTTP_PORT}\naction = \"accept\"\n"
        )),
    );
    let script = format!(
        "import socket\n\
         for i in range(3):\n\
         \x20   s = socket.create_connection(('{SERVER_V4}', {HTTP_PORT}), timeout=3)\n\
         \x20   s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n\
         \x20   assert s.recv(100), 'no answer from the allowed port'\n\
         \x20   s.close()\n\
         try:\n\
         \x20   s = socket.create_connection(('{SERVER_V4}', {SINK_PORT}), timeout=2)\n\
         \x20   s.sendall(b'second-socket-other-port')\n\
         except OSError:\n\
         \x20   pass\n"
    );
    let out = run_python(&bed, &script);
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(GRACE);
    assert!(
        !bed.sink_received().contains("second-socket-other-port"),
        "a port rule's accept was applied to the process's other sockets"
    );
    d.wait_trace_line(&[
        "is not in whitelist -> DROP.",
        &format!("'{SERVER_V4}', {SINK_PORT})"),
    ]);
}

/// A TCP socket whose first connect a rule on destinations allowed cannot
/// connect elsewhere on that verdict (disconnected with AF_UNSPEC and
/// connected again): it is judged again at its new connect.
#[test]
fn a_socket_allowed_to_one_destination_cannot_reconnect_to_another() {
    let mut bed = Bed::new();
    bed.serve().sink();
    let py = python_exe();
    let config = format!(
        "[global]\naction = \"reject\"\n\n[[rule]]\nexe = \"{py}\"\nport = {HTTP_PORT}\naction = \"accept\"\n"
    );
    let d = Daemon::start(&bed, &["-w"], Some(&config));
    let script = format!(
        "import ctypes, socket\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n\
         s.settimeout(2)\n\
         s.connect(('{SERVER_V4}', {HTTP_PORT}))\n\
         print('first connect done', flush=True)\n\
         unspec = (ctypes.c_ubyte * 16)()\n\
         print('disconnect', libc.connect(s.fileno(), ctypes.byref(unspec), 16), flush=True)\n\
         s.connect(('{SERVER_V4}', {SINK_PORT}))\n\
         s.send(b'reconnected-elsewhere')\n"
    );
    let out = run_python(&bed, &script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("first connect done") && text.contains("disconnect 0"),
        "{out:?}"
    );
    std::thread::sleep(GRACE);
    assert!(
        !bed.sink_received().contains("reconnected-elsewhere"),
        "a socket allowed to port {HTTP_PORT} reached the sink on that verdict: {}",
        bed.sink_received()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Connection refused"),
        "the second connect was not refused: {out:?}"
    );
    d.wait_trace_line(&["is not in whitelist -> REJECT", &format!("{SINK_PORT})")]);
}
