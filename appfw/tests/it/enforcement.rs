//! Verdicts that hold against the program they judge. Every attack runs as
//! an unprivileged user in the client namespace and is checked at the
//! receiving end: the sink in the server namespace records every payload,
//! and a blocked program's marker must never appear there. Each attack has
//! a positive control: what the policy allows does arrive.

use std::time::Duration;

use crate::testbed::*;

/// A python3 program, run as the attacker, sending `marker` to the sink
/// over `proto` ("tcp" or "udp") and `host`.
pub fn send_script(proto: &str, host: &str, marker: &str) -> String {
    let kind = if proto == "tcp" {
        "SOCK_STREAM"
    } else {
        "SOCK_DGRAM"
    };
    let fam = if host.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    format!(
        "import socket\n\
         s = socket.socket(socket.{fam}, socket.{kind})\n\
         s.settimeout(3)\n\
         s.connect(('{host}', {SINK_PORT}))\n\
         s.send(b'{marker}')\n\
         s.close()\n"
    )
}

#[test]
fn whitelisted_program_reaches_the_sink_as_an_unprivileged_user() {
    let mut bed = Bed::new();
    bed.sink();
    let _d = Daemon::start(
        &bed,
        &["-w"],
        Some(&format!("[global]\nwhitelist = [\"{}\"]\n", python_exe())),
    );
    for (proto, host) in [
        ("tcp", SERVER_V4),
        ("udp", SERVER_V4),
        ("tcp", SERVER_V6),
        ("udp", SERVER_V6),
    ] {
        let marker = format!("allowed-{proto}-{}", host.len());
        let out = bed
            .as_attacker(python())
            .args(["-c", &send_script(proto, host, &marker)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{proto} {host}: {out:?}");
        assert!(
            bed.sink_got(&marker, Duration::from_secs(5)),
            "a whitelisted program's {proto} payload to {host} did not arrive: {}",
            bed.sink_received()
        );
    }
}

/// A copy of python3 at a path of its own, owned by root: a program a
/// policy can allow while python3 itself stays blocked.
fn allowed_python(bed: &Bed) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = bed.dir.join("allowed-python");
    std::fs::copy(python_exe(), &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bed.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Sends `marker` over `proto` from local port `sport` to `host:port`,
/// reading one reply for UDP (so conntrack sees both directions).
fn send_from_port(proto: &str, host: &str, port: u16, sport: u16, marker: &str) -> String {
    let (fam, any) = if host.contains(':') {
        ("AF_INET6", "::")
    } else {
        ("AF_INET", "0.0.0.0")
    };
    let kind = if proto == "tcp" {
        "SOCK_STREAM"
    } else {
        "SOCK_DGRAM"
    };
    format!(
        "import socket\n\
         s = socket.socket(socket.{fam}, socket.{kind})\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.settimeout(2)\n\
         s.bind(('{any}', {sport}))\n\
         s.connect(('{host}', {port}))\n\
         s.send(b'{marker}')\n\
         if '{proto}' == 'udp':\n\
         \x20   try: s.recv(100)\n\
         \x20   except OSError: pass\n\
         s.close()\n"
    )
}

#[test]
fn a_second_socket_cannot_ride_another_ones_conntrack_entry() {
    // A whitelisted program opens a flow from a port; the attacker's
    // program sends from the same port to the same destination at once,
    // while conntrack still holds the (replied) flow.
    let mut bed = Bed::new();
    bed.serve();
    bed.sink();
    let allowed = allowed_python(&bed);
    let _d = Daemon::start(
        &bed,
        &["-w"],
        Some(&format!("[global]\nwhitelist = [\"{allowed}\"]\n")),
    );
    for (i, (proto, host, port)) in [
        ("udp", SERVER_V4, UDP_PORT),
        ("udp", SERVER_V6, UDP_PORT),
        ("tcp", SERVER_V4, SINK_PORT),
        ("tcp", SERVER_V6, SINK_PORT),
    ]
    .into_iter()
    .enumerate()
    {
        let sport = 41000 + i as u16;
        let first = format!("allowed-first-{i}");
        let ride = format!("riding-{i}");
        let out = bed
            .as_attacker(&allowed)
            .args(["-c", &send_from_port(proto, host, port, sport, &first)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let arrived = |m: &str| {
            if proto == "udp" {
                bed.udp_received().contains(m)
            } else {
                bed.sink_received().contains(m)
            }
        };
        wait_for(Duration::from_secs(5), "the whitelisted payload", || {
            arrived(&first).then_some(())
        });
        let _ = bed
            .as_attacker(python())
            .args(["-c", &send_from_port(proto, host, port, sport, &ride)])
            .output()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            !arrived(&ride),
            "{proto} to {host}: python3 rode the whitelisted program's flow: {}{}",
            bed.udp_received(),
            bed.sink_received()
        );
    }
}

#[test]
fn protocols_other_than_tcp_and_udp_are_judged() {
    // ping (cap_net_raw) and UDP-Lite (any user) under a whitelist that
    // lists neither; then the same with them listed.
    let mut bed = Bed::new();
    bed.sink();
    let udplite = |host: &str, marker: &str| {
        let fam = if host.contains(':') {
            "AF_INET6"
        } else {
            "AF_INET"
        };
        format!(
            "import socket\n\
             s = socket.socket(socket.{fam}, socket.SOCK_DGRAM, socket.IPPROTO_UDPLITE)\n\
             s.sendto(b'{marker}', ('{host}', {SINK_PORT}))\n"
        )
    };
    // ping -p fills the payload with this pattern; the sink records it.
    let ping = |bed: &Bed, host: &str, pattern: &str| {
        bed.as_attacker("/usr/bin/ping")
            .args(["-c", "2", "-i", "0.2", "-W", "1", "-p", pattern, host])
            .output()
            .unwrap()
    };
    let ping_exe = std::fs::canonicalize("/usr/bin/ping").unwrap();
    {
        let _d = Daemon::start(
            &bed,
            &["-w"],
            Some("[global]\nwhitelist = [\"/usr/bin/curl\"]\n"),
        );
        for host in [SERVER_V4, SERVER_V6] {
            let out = ping(&bed, host, "0b0b0b0b");
            assert!(!out.status.success(), "ping got replies: {out:?}");
            // Run from a file the attacker wrote, as an attack would be.
            let m = format!("udplite-blocked-{}", host.len());
            let script = bed
                .attacker_dir()
                .join(format!("udplite-{}.py", host.len()));
            std::fs::write(&script, udplite(host, &m)).unwrap();
            bed.as_attacker(python()).arg(&script).output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(500));
        let got = bed.sink_received();
        assert!(
            !got.contains("\\x0b\\x0b\\x0b\\x0b"),
            "ping's echo requests arrived: {got}"
        );
        assert!(!got.contains("udplite-blocked"), "UDP-Lite got out: {got}");
    }
    let _d = Daemon::start(
        &bed,
        &["-w"],
        Some(&format!(
            "[global]\nwhitelist = [\"{}\", \"{}\"]\n",
            ping_exe.display(),
            python_exe()
        )),
    );
    for host in [SERVER_V4, SERVER_V6] {
        let out = ping(&bed, host, "0c0c0c0c");
        assert!(
            out.status.success(),
            "a whitelisted ping to {host} failed: {out:?}"
        );
        let m = format!("udplite-allowed-{}", host.len());
        bed.as_attacker(python())
            .args(["-c", &udplite(host, &m)])
            .output()
            .unwrap();
        assert!(
            bed.sink_got(&m, Duration::from_secs(5)),
            "whitelisted UDP-Lite to {host} did not arrive: {}",
            bed.sink_received()
        );
    }
    assert!(bed.sink_received().contains("\\x0c\\x0c\\x0c\\x0c"));
}

/// A python3 client, run as the attacker, that connects to the sink over
/// TCP and sends each line it reads on stdin as one payload.
fn long_lived_sender(bed: &Bed, host: &str) -> std::process::Child {
    let script = format!(
        "import socket, sys\n\
         s = socket.create_connection(('{host}', {SINK_PORT}), timeout=5)\n\
         print('connected', flush=True)\n\
         for line in sys.stdin:\n\
         \x20   s.send(line.strip().encode())\n\
         \x20   print('sent', flush=True)\n"
    );
    bed.as_attacker(python())
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn send_line(child: &mut std::process::Child, line: &str) {
    use std::io::{BufRead, BufReader, Write};
    let stdin = child.stdin.as_mut().unwrap();
    writeln!(stdin, "{line}").unwrap();
    stdin.flush().unwrap();
    let mut reply = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut reply)
        .unwrap();
}

fn wait_connected(child: &mut std::process::Child) {
    use std::io::{BufRead, BufReader};
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "connected");
}

#[test]
fn connections_that_exist_are_judged_at_start_and_at_reload() {
    let mut bed = Bed::new();
    bed.sink();
    let blacklist = format!("[global]\nblacklist = [\"{}\"]\n", python_exe());

    // Opened before appfw starts: its next payload is judged.
    let mut early = long_lived_sender(&bed, SERVER_V4);
    wait_connected(&mut early);
    send_line(&mut early, "early-before");
    assert!(bed.sink_got("early-before", Duration::from_secs(5)));
    let d = Daemon::start(&bed, &["-b"], Some(&blacklist));
    send_line(&mut early, "early-after-start");
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !bed.sink_received().contains("early-after-start"),
        "a connection older than appfw kept sending for a blacklisted program"
    );
    let _ = early.kill();
    let _ = early.wait();
    drop(d);

    // Accepted many times, then a reload blacklists it: its very next
    // payload on the same connection is blocked.
    let d = Daemon::start(
        &bed,
        &["-b"],
        Some("[global]\nblacklist = [\"/usr/bin/wget\"]\n"),
    );
    let mut late = long_lived_sender(&bed, SERVER_V6);
    wait_connected(&mut late);
    for i in 0..20 {
        send_line(&mut late, &format!("late-accepted-{i}"));
    }
    assert!(bed.sink_got("late-accepted-19", Duration::from_secs(5)));
    write_config(&bed.dir, &blacklist);
    d.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(5), "the reload", || {
        d.stderr_text()
            .contains("configuration reloaded")
            .then_some(())
    });
    send_line(&mut late, "late-after-reload");
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !bed.sink_received().contains("late-after-reload"),
        "a blacklisted program kept its old verdict after a reload"
    );
    let _ = late.kill();
    let _ = late.wait();
}

#[test]
fn a_flow_through_nat_in_output_is_judged_by_its_socket() {
    // A local DNAT (as kube-proxy or Docker install) rewrites the
    // destination before appfw's chain sees the packet.
    let mut bed = Bed::new();
    bed.sink();
    const VIP: &str = "198.51.100.77";
    for proto in ["tcp", "udp"] {
        let nat = bed
            .in_client("iptables")
            .args(["-w", "-t", "nat", "-A", "OUTPUT", "-d", VIP, "-p", proto])
            .args(["--dport", "80", "-j", "DNAT", "--to-destination"])
            .arg(format!("{SERVER_V4}:{SINK_PORT}"))
            .output()
            .unwrap();
        assert!(nat.status.success(), "{nat:?}");
    }
    // TCP and UDP through the NAT, each with a marker of its own.
    let through_nat = |marker: &str| {
        format!(
            "import socket\n\
             s = socket.create_connection(('{VIP}', 80), timeout=2)\n\
             s.send(b'{marker}-tcp')\n\
             s.close()\n\
             u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             u.sendto(b'{marker}-udp', ('{VIP}', 80))\n"
        )
    };
    {
        let _d = Daemon::start(
            &bed,
            &["-w"],
            Some(&format!("[global]\nwhitelist = [\"{}\"]\n", python_exe())),
        );
        let out = bed
            .as_attacker(python())
            .args(["-c", &through_nat("nat-allowed")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(bed.sink_got("nat-allowed-tcp", Duration::from_secs(5)));
        assert!(bed.sink_got("nat-allowed-udp", Duration::from_secs(5)));
    }
    let d = Daemon::start(
        &bed,
        &["-b"],
        Some(&format!("[global]\nblacklist = [\"{}\"]\n", python_exe())),
    );
    let _ = bed
        .as_attacker(python())
        .args(["-c", &through_nat("nat-blocked")])
        .output()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !bed.sink_received().contains("nat-blocked"),
        "a blacklisted program reached the server through NAT"
    );
    d.wait_trace_line(&["is in blacklist -> DROP."]);
}

#[test]
fn a_program_cannot_make_its_traffic_look_like_a_reply() {
    // IPV6_FREEBIND needs no privilege: bound to the remote's address, the
    // program sends itself a datagram over lo, so conntrack holds a flow
    // "from" the remote; its own socket's datagrams to the remote are then
    // that flow's replies. Only connections that really came in from
    // outside have replies appfw lets pass unjudged.
    let mut bed = Bed::new();
    bed.sink();
    let script = |marker: &str| {
        format!(
            "import socket, time\n\
             d = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
             d.bind(('{CLIENT_V6}', 40000))\n\
             sp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
             sp.setsockopt(socket.IPPROTO_IPV6, 78, 1)\n\
             sp.bind(('{SERVER_V6}', {SINK_PORT}))\n\
             sp.sendto(b'x', ('{CLIENT_V6}', 40000))\n\
             d.settimeout(2)\n\
             d.recvfrom(100)\n\
             for i in range(3):\n\
             \x20   try: d.sendto(b'{marker}-%d' % i, ('{SERVER_V6}', {SINK_PORT}))\n\
             \x20   except PermissionError: pass\n\
             \x20   time.sleep(0.1)\n"
        )
    };
    let allowed = allowed_python(&bed);
    let _d = Daemon::start(
        &bed,
        &["-w"],
        Some(&format!("[global]\nwhitelist = [\"{allowed}\"]\n")),
    );
    let out = bed
        .as_attacker(python())
        .args(["-c", &script("spoofed-reply")])
        .output()
        .unwrap();
    assert!(out.status.success(), "the attack did not run: {out:?}");
    // The whitelisted copy doing the same gets out: the datagrams were
    // judged, not merely broken.
    let out = bed
        .as_attacker(&allowed)
        .args(["-c", &script("allowed-reply")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(bed.sink_got("allowed-reply-2", Duration::from_secs(5)));
    assert!(
        !bed.sink_received().contains("spoofed-reply"),
        "a blocked program's datagrams passed as replies: {}",
        bed.sink_received()
    );
}
