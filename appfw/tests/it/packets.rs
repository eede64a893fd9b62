//! Packets built to slip past the parser or the queue. Each attack runs as
//! the unprivileged user in the client namespace against the sink in the
//! server namespace, next to a positive control: the same packet from a
//! program the policy allows arrives.
//!
//! An ordinary user may put an IPv6 routing header (segment routing, type
//! 4) on its own sockets (IPV6_RTHDR); hop-by-hop and destination options
//! need CAP_NET_RAW, so only routing headers are unprivileged attacks here
//! (the parser's unit tests cover the other extension headers).

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use crate::testbed::*;

/// Segment routing needs to be enabled where the packet arrives; the
/// server namespace is the test's own.
fn accept_segment_routing(bed: &Bed) {
    for key in [
        "net.ipv6.conf.all.seg6_enabled=1",
        "net.ipv6.conf.eth0.seg6_enabled=1",
    ] {
        let out = Command::new("ip")
            .args(["netns", "exec", &bed.server, "sysctl", "-qw", key])
            .output()
            .unwrap();
        assert!(out.status.success(), "sysctl {key}: {out:?}");
    }
}

/// A python3 program sending `marker` to the sink over `proto` with a
/// segment routing header of `segments` segments (16 bytes each). The
/// header has no segments left: the packet goes to segment 0 of the
/// option (`first_hop`) and the kernel writes the socket's destination
/// (`dest`) into the packet's segment 0.
fn rthdr_script(proto: &str, first_hop: &str, dest: &str, segments: usize, marker: &str) -> String {
    let kind = if proto == "tcp" {
        "SOCK_STREAM"
    } else {
        "SOCK_DGRAM"
    };
    format!(
        "import socket, struct\n\
         n = {segments}\n\
         hop = socket.inet_pton(socket.AF_INET6, '{first_hop}')\n\
         srh = struct.pack('!BBBBBBH', 0, 2 * n, 4, 0, n - 1, 0, 0) + hop * n\n\
         s = socket.socket(socket.AF_INET6, socket.{kind})\n\
         s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RTHDR, srh)\n\
         s.settimeout(3)\n\
         if socket.{kind} == socket.SOCK_DGRAM:\n\
         \x20   s.sendto(b'{marker}', ('{dest}', {SINK_PORT}))\n\
         else:\n\
         \x20   s.connect(('{dest}', {SINK_PORT}))\n\
         \x20   s.send(b'{marker}')\n\
         s.close()\n"
    )
}

/// Runs `script` as the attacker: with `-c` (how the blocked program runs)
/// or from a file (how the allowed one runs).
fn attack(bed: &Bed, script: &str, from_file: Option<&str>) -> Output {
    let mut cmd = bed.as_attacker(python());
    match from_file {
        Some(name) => {
            let path = bed.attacker_dir().join(name);
            std::fs::write(&path, script).unwrap();
            cmd.arg(path);
        }
        None => {
            cmd.args(["-c", script]);
        }
    }
    cmd.output().unwrap()
}

/// The control program's path: a command-prefix entry names it.
fn allowed_path(bed: &Bed) -> String {
    bed.attacker_dir()
        .join("allowed.py")
        .to_string_lossy()
        .into_owned()
}

/// Under both modes, a program the policy blocks sends with a long routing
/// header (UDP and TCP; also with a first hop that differs from the
/// destination it asked for) and gets nothing out; the allowed program's
/// identical packets arrive, so the header was walked and the packet
/// attributed, not merely dropped as unreadable.
fn routing_header_attack(mode: &str) {
    let mut bed = Bed::new();
    bed.sink();
    accept_segment_routing(&bed);
    // A prefix entry names exactly the program it lists: "python3 -c" is
    // every attack script, "python3 <allowed.py>" only the control.
    let config = match mode {
        "-w" => format!(
            "[global]\nwhitelist = [\"python3 {}\"]\n",
            allowed_path(&bed)
        ),
        _ => "[global]\nblacklist = [\"python3 -c\"]\n".to_string(),
    };
    let d = Daemon::start(&bed, &[mode], Some(&config));
    // 40 segments: a 648-byte routing header, far beyond the old 128-byte
    // copy range. The hidden-destination variant asks for 2001:db8::77 and
    // routes via the sink.
    let cases = [
        ("udp", SERVER_V6, SERVER_V6, 40),
        ("tcp", SERVER_V6, SERVER_V6, 40),
        ("udp", SERVER_V6, "2001:db8::77", 40),
        // 1288 bytes: near the MTU (the unfragmentable part must fit in
        // one packet, so the kernel refuses more).
        ("udp", SERVER_V6, SERVER_V6, 80),
    ];
    for (i, (proto, hop, dest, n)) in cases.into_iter().enumerate() {
        let blocked = format!("rthdr-blocked-{mode}-{i}");
        let allowed = format!("rthdr-allowed-{mode}-{i}");
        let out = attack(&bed, &rthdr_script(proto, hop, dest, n, &blocked), None);
        if proto == "udp" {
            assert!(
                out.status.success(),
                "case {i}: the attack did not run: {out:?}"
            );
        }
        let out = attack(
            &bed,
            &rthdr_script(proto, hop, dest, n, &allowed),
            Some("allowed.py"),
        );
        assert!(out.status.success(), "control {i}: {out:?}");
        if dest == SERVER_V6 {
            assert!(
                bed.sink_got(&allowed, Duration::from_secs(5)),
                "case {i} ({proto}, {n} segments): the allowed program's packet did not arrive: {}\n{}\n{}",
                bed.sink_received(),
                d.trace_text(),
                d.stderr_text()
            );
        }
        // The blocked one had its chance first and as long.
        assert!(
            !bed.sink_got(&blocked, Duration::from_millis(500)),
            "case {i} ({proto}, {n} segments): a blocked program got a packet out with a routing header: {}\n{}",
            bed.sink_received(),
            d.stderr_text()
        );
    }
    // The hidden destination is reported as the program asked for it.
    let verdict = if mode == "-w" {
        "is not in whitelist -> DROP."
    } else {
        "is in blacklist -> DROP."
    };
    d.wait_trace_line(&[verdict, "('udp', '2001:db8::1', ", "'2001:db8::77', 9000)"]);
    d.wait_trace_line(&[verdict, "('tcp', '2001:db8::1', ", "'2001:db8::2', 9000)"]);
    let stderr = d.stop();
    assert!(
        stderr.contains("not understood 0"),
        "the routing headers should all have been read: {stderr}"
    );
}

#[test]
fn long_routing_header_cannot_pass_the_whitelist() {
    routing_header_attack("-w");
}

#[test]
fn long_routing_header_cannot_pass_the_blacklist() {
    routing_header_attack("-b");
}

/// A packet appfw cannot read is judged as from an unknown owner: under
/// --whitelist it is dropped and reported. Root builds one (a raw socket
/// sending IPv6 with a mobility header, which appfw does not walk); an
/// unprivileged user cannot, which is why it runs as root.
#[test]
fn unreadable_packet_is_dropped_under_whitelist_and_reported() {
    let mut bed = Bed::new();
    bed.sink();
    let d = Daemon::start(
        &bed,
        &["-w"],
        Some(&format!("[global]\nwhitelist = [\"{}\"]\n", python_exe())),
    );
    // appfw's rules queue TCP and UDP; the test queues the mobility header
    // protocol as well.
    let out = bed
        .in_client("ip6tables")
        .args([
            "-w",
            "-I",
            "OUTPUT",
            "-p",
            "135",
            "-j",
            "NFQUEUE",
            "--queue-num",
            "0",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The server counts what arrives of that protocol.
    let count_rule = ["-w", "-I", "INPUT", "-p", "135", "-j", "ACCEPT"];
    let out = Command::new("ip")
        .args(["netns", "exec", &bed.server, "ip6tables"])
        .args(count_rule)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Mobility header (135, "no next header" 59 inside) then UDP bytes as
    // payload: nothing appfw can attribute.
    let script = "import socket\n\
         s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 135)\n\
         s.sendto(bytes([59, 0, 0, 0, 0, 0, 0, 0]) + b'unreadable-marker', ('2001:db8::2', 0))\n";
    let out = bed
        .in_client(python())
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    d.wait_trace_line(&[
        "unknown program (packet not understood: an IPv6 extension header appfw cannot read) -> DROP.",
        "'2001:db8::2', 0)",
    ]);
    // The whitelisted program still gets through the same rule.
    let out = bed
        .in_client(python())
        .args([
            "-c",
            &crate::enforcement::send_script("udp", SERVER_V6, "readable-marker"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(bed.sink_got("readable-marker", Duration::from_secs(5)));
    let stderr = d.stop();
    assert!(stderr.contains("not understood 1"), "{stderr}");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &bed.server,
            "ip6tables",
            "-w",
            "-L",
            "INPUT",
            "-v",
            "-x",
            "-n",
        ])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    let arrived = listing
        .lines()
        .find(|l| l.contains("135"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        arrived, "0",
        "the unreadable packet reached the server: {listing}"
    );
}

/// The kernel's counters of queue 0 in the client namespace.
fn kernel_queue(bed: &Bed) -> (u64, u64, u64) {
    let text = bed.in_client_ns(|| {
        std::fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_queue").unwrap()
    });
    let f: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        f.len() >= 8,
        "unexpected nfnetlink_queue contents: {text:?}"
    );
    (f[5], f[6], f[7])
}

/// A flood of new UDP flows from several unprivileged processes fills the
/// queue while a blacklisted curl keeps retrying: not one of curl's
/// requests arrives (a full queue drops, never accepts), the drops happen
/// and appfw reports them with the kernel's count. With kernel verdicts
/// off, so that every flow of the flooders is queued.
#[test]
fn flood_overflowing_the_queue_lets_no_blocked_packet_through() {
    flood(false);
}

/// The same flood with kernel verdicts on: the flooders' flows after their
/// first are decided in the kernel, so they cannot fill the queue at all,
/// and curl is still blocked.
#[test]
fn a_long_lived_flooder_cannot_fill_the_queue_with_kernel_verdicts() {
    flood(true);
}

fn flood(kernel_verdicts: bool) {
    let mut bed = Bed::new();
    bed.sink();
    let args: &[&str] = if kernel_verdicts {
        &["-b"]
    } else {
        &["-b", "--no-kernel-verdicts"]
    };
    let d = Daemon::start(
        &bed,
        args,
        Some("[global]\nblacklist = [\"/usr/bin/curl\"]\n"),
    );
    // Each sender: a fresh socket per datagram (a new flow each), to a port
    // nobody listens on, for at most 8 s.
    let flood = format!(
        "import socket, time\n\
         end = time.time() + 8\n\
         n = 0\n\
         while time.time() < end and n < 2000000:\n\
         \x20   s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         \x20   s.setblocking(False)\n\
         \x20   try:\n\
         \x20       s.sendto(b'x', ('{SERVER_V4}', 9999))\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         \x20   s.close()\n\
         \x20   n += 1\n\
         print(n)\n"
    );
    let mut senders: Vec<_> = (0..6)
        .map(|_| {
            bed.as_attacker(python())
                .args(["-c", &flood])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Queued so far: with kernel verdicts, each flooder's burst until its
    // first flow was judged.
    let (_, _, queued_early) = kernel_queue(&bed);
    let start = Instant::now();
    let mut tries = 0;
    while start.elapsed() < Duration::from_secs(6) {
        let url = format!("http://{SERVER_V4}:{SINK_PORT}/curl-flood-{tries}");
        let _ = bed
            .as_attacker(curl())
            .args([
                "-sS",
                "--max-time",
                "0.3",
                "--data",
                "curl-flood-payload",
                &url,
            ])
            .output()
            .unwrap();
        tries += 1;
    }
    let sent: u64 = senders
        .drain(..)
        .map(|s| {
            let out = s.wait_with_output().unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
        })
        .sum();
    let (queue_dropped, user_dropped, id_sequence) = kernel_queue(&bed);
    // The allowed side still works after the flood.
    let out = bed
        .as_attacker(python())
        .args([
            "-c",
            &crate::enforcement::send_script("udp", SERVER_V4, "after-flood"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        bed.sink_got("after-flood", Duration::from_secs(5)),
        "python is not blacklisted: {}",
        bed.sink_received()
    );
    let received = bed.sink_received();
    assert!(
        !received.contains("curl-flood"),
        "a blacklisted curl got through a full queue ({tries} tries): {received}"
    );
    assert!(tries >= 5, "curl ran only {tries} times");
    let dropped = queue_dropped + user_dropped;
    eprintln!(
        "flood: {id_sequence} packets queued, {queue_dropped} dropped over the queue length, \
         {user_dropped} over the receive buffer; curl tried {tries} times"
    );
    if kernel_verdicts && std::env::var_os("APPFW_TEST_KERNEL_VERDICTS").is_none_or(|v| v != "off")
    {
        // Each flooder's sockets go through the queue only until its
        // first is judged (a burst in the first moments, while the daemon
        // answers); in the 6 s after that, only curl's tries (a new
        // process each) and the check above reach it, not the flood.
        let later = id_sequence - queued_early;
        assert!(
            dropped == 0 && later < 10 * tries + 100,
            "the flood reached the queue: {sent} datagrams sent, {queued_early} packets queued in the first 0.5 s, {later} after, {dropped} dropped"
        );
        d.stop();
        return;
    }
    assert!(
        dropped > 0,
        "the flood did not fill the queue ({id_sequence} packets queued): the test proves nothing"
    );
    // appfw reports the drops once a second and at exit; its last report
    // has the kernel's total.
    let stderr = d.stop();
    assert!(
        stderr.contains("packets dropped: queue full"),
        "appfw did not report the drops: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "dropped {dropped} (queue full {queue_dropped}, receive buffer full {user_dropped})"
        )),
        "appfw's count differs from the kernel's ({dropped}): {stderr}"
    );
}
