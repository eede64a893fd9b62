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
