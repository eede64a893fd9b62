//! Names from DNS answers: real clients resolve names through the test
//! bed's DNS server (glibc's resolver, python's getaddrinfo, dig over UDP
//! and TCP); appfw learns them from the answers the kernel copies and
//! puts them in report lines and `host` rules.

use std::time::Duration;

use serde_json::json;

use crate::testbed::*;

/// The bed's names: two names for the server's one address.
fn table() -> serde_json::Value {
    json!({
        "test.example": {"a": [SERVER_V4], "aaaa": [SERVER_V6], "ttl": 60},
        "other.example": {"a": [SERVER_V4], "ttl": 60},
        "www.test.example": {"a": [SERVER_V4], "ttl": 60},
        "tcp.example": {"a": [SERVER_V4], "ttl": 60},
        "ttl.example": {"a": [SERVER_V4], "ttl": 1},
        "good.example": {"a": [SERVER_V4], "ttl": 60},
        "trunc.example": {"a": [SERVER_V4, SERVER_V4], "ttl": 60, "bad": "truncated"},
        "loop.example": {"bad": "loop"},
    })
}

fn bed() -> Bed {
    let mut bed = Bed::new();
    bed.serve();
    bed.sink();
    bed.serve_names(&table());
    bed.resolver();
    bed
}

/// python3 resolving `name` with getaddrinfo (glibc) and connecting to
/// its IPv4 address on `port`.
fn python_connect(bed: &Bed, name: &str, port: u16) -> std::process::Output {
    let script = format!(
        "import socket\n\
         a = socket.getaddrinfo('{name}', {port}, socket.AF_INET, socket.SOCK_STREAM)[0][4]\n\
         s = socket.create_connection(a, timeout=3)\n\
         s.close()\n"
    );
    bed.in_client(python())
        .args(["-c", &script])
        .output()
        .expect("running python3")
}

fn curl_url(bed: &Bed, url: &str) -> std::process::Output {
    bed.in_client(curl())
        .args(["-sS", "-4", "--max-time", "3", url])
        .output()
        .expect("running curl")
}

#[test]
fn report_lines_carry_the_name_each_program_asked_for() {
    let bed = bed();
    let d = Daemon::start(&bed, &["-m"], None);
    // curl resolves through glibc (a connected UDP socket).
    let out = curl_url(&bed, &format!("http://test.example:{HTTP_PORT}/"));
    assert!(out.status.success(), "{out:?}");
    let line = d.wait_trace_line(&[
        "'/usr/bin/curl'",
        &format!("'{SERVER_V4}', {HTTP_PORT}) host=test.example"),
    ]);
    eprintln!("report line: {line}");
    // The same address under another name, asked by another program.
    let out = python_connect(&bed, "other.example", HTTP_PORT);
    assert!(out.status.success(), "{out:?}");
    d.wait_trace_line(&[
        &format!("'{}'", python_exe()),
        &format!("'{SERVER_V4}', {HTTP_PORT}) host=other.example"),
    ]);
    assert!(
        bed.dns_received().contains("other.example"),
        "the query never reached the server: {}",
        bed.dns_received()
    );
}

#[test]
fn names_learned_over_tcp_by_dig() {
    let bed = bed();
    let d = Daemon::start(&bed, &["-m"], None);
    let out = bed
        .in_client("dig")
        .args([
            "+tcp",
            "+short",
            "+time=2",
            "+tries=1",
            &format!("@{SERVER_V4}"),
            "tcp.example",
            "A",
        ])
        .output()
        .expect("running dig (apt-get install bind9-dnsutils)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        SERVER_V4,
        "{out:?}"
    );
    // Another program connects to the address: the name is shown (it was
    // not that program's own answer, so no rule could use it).
    let out = bed
        .in_client(python())
        .args([
            "-c",
            &crate::enforcement::send_script("tcp", SERVER_V4, "after-dig"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    d.wait_trace_line(&[&format!("'{SERVER_V4}', {SINK_PORT}) host=tcp.example")]);
    // UDP over IPv6, an AAAA answer.
    let out = bed
        .in_client("dig")
        .args([
            "+short",
            "+time=2",
            "+tries=1",
            &format!("@{SERVER_V6}"),
            "test.example",
            "AAAA",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        SERVER_V6,
        "{out:?}"
    );
    let out = bed
        .in_client(python())
        .args([
            "-c",
            &crate::enforcement::send_script("tcp", SERVER_V6, "after-dig-v6"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    d.wait_trace_line(&[&format!("'{SERVER_V6}', {SINK_PORT}) host=test.example")]);
}

#[test]
fn host_rules_allow_a_name_and_port_and_nothing_else() {
    let bed = bed();
    let config = format!(
        "[[rule]]\nname = \"dns\"\nport = 53\naction = \"accept\"\n\n\
         [[rule]]\nname = \"curl web\"\nexe = \"{}\"\nhost = \"*.test.example\"\nport = {HTTP_PORT}\naction = \"accept\"\n",
        curl()
    );
    let d = Daemon::start(&bed, &["-w"], Some(&config));
    let ok = curl_url(&bed, &format!("http://www.test.example:{HTTP_PORT}/"));
    assert!(
        ok.status.success() && !ok.stdout.is_empty(),
        "the rule's name and port: {ok:?}"
    );
    // The rule's name on another port: the sink gets no request.
    let other_port = curl_url(&bed, &format!("http://www.test.example:{SINK_PORT}/"));
    assert!(!other_port.status.success(), "{other_port:?}");
    // The same address under a name the rule does not give.
    let other_name = curl_url(&bed, &format!("http://other.example:{HTTP_PORT}/"));
    assert!(!other_name.status.success(), "{other_name:?}");
    // "*." needs a label in front: test.example itself is not under it.
    let apex = curl_url(&bed, &format!("http://test.example:{HTTP_PORT}/"));
    assert!(!apex.status.success(), "{apex:?}");
    // The same address without a name: blocked, though names of it were
    // learned.
    let bare = curl_url(&bed, &format!("http://{SERVER_V4}:{HTTP_PORT}/"));
    assert!(
        !bare.status.success(),
        "a bare address must not borrow a name: {bare:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !bed.sink_received().contains("GET"),
        "curl reached the sink's port: {}",
        bed.sink_received()
    );
    for host in ["www.test.example", "other.example", "test.example"] {
        let port = if host == "www.test.example" {
            SINK_PORT
        } else {
            HTTP_PORT
        };
        d.wait_trace_line(&[
            "'/usr/bin/curl'",
            "is not in whitelist -> DROP.",
            &format!("'{SERVER_V4}', {port}) host={host}"),
        ]);
    }
}

#[test]
fn a_name_past_its_ttl_names_nothing() {
    let bed = bed();
    let d = Daemon::start(&bed, &["-m"], None);
    let script = format!(
        "import socket, time\n\
         a = socket.getaddrinfo('ttl.example', 0, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]\n\
         socket.create_connection((a, {HTTP_PORT}), timeout=3).close()\n\
         time.sleep(3.5)\n\
         socket.create_connection((a, {SINK_PORT}), timeout=3).close()\n"
    );
    let out = bed
        .in_client(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    d.wait_trace_line(&[&format!("'{SERVER_V4}', {HTTP_PORT}) host=ttl.example")]);
    let later = d.wait_trace_line(&[&format!("'{SERVER_V4}', {SINK_PORT})")]);
    assert!(
        !later.contains("host="),
        "an expired name was used: {later}"
    );
}

#[test]
fn malformed_answers_neither_crash_nor_stall_the_daemon() {
    let bed = bed();
    let d = Daemon::start(&bed, &["-m"], None);
    for name in ["trunc.example", "loop.example"] {
        for _ in 0..3 {
            let _ = bed
                .in_client(python())
                .args(["-c", &format!("import socket\ntry: socket.getaddrinfo('{name}', 80, socket.AF_INET)\nexcept OSError: pass")])
                .output()
                .unwrap();
            let _ = bed
                .in_client("dig")
                .args([
                    "+tcp",
                    "+time=1",
                    "+tries=1",
                    &format!("@{SERVER_V4}"),
                    name,
                ])
                .output()
                .unwrap();
        }
    }
    assert!(
        bed.dns_received().contains("loop.example"),
        "{}",
        bed.dns_received()
    );
    // Still judging, and still learning names.
    let out = python_connect(&bed, "good.example", HTTP_PORT);
    assert!(out.status.success(), "{out:?}");
    d.wait_trace_line(&[&format!("'{SERVER_V4}', {HTTP_PORT}) host=good.example")]);
    let stderr = d.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn trace_shows_the_name_in_text_and_json() {
    let mut bed = bed();
    let rx = crate::trace::start_trace(&mut bed, &["--json"]);
    let out = curl_url(&bed, &format!("http://test.example:{HTTP_PORT}/"));
    assert!(out.status.success(), "{out:?}");
    let line = crate::trace::next_matching(&rx, |l| {
        l.contains("/usr/bin/curl") && l.contains(&format!("\"dport\":{HTTP_PORT}"))
    });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["host"], "test.example", "{line}");
    let rx = crate::trace::start_trace(&mut bed, &[]);
    let out = python_connect(&bed, "other.example", HTTP_PORT);
    assert!(out.status.success(), "{out:?}");
    let line = crate::trace::next_matching(&rx, |l| {
        l.contains(&format!("port={HTTP_PORT},")) && l.contains("python")
    });
    assert!(line.ends_with(", host=other.example"), "{line}");
}

/// A caching stub in the client namespace, as systemd-resolved or dnsmasq
/// would be: it asks the server, and answers programs from 127.0.0.1:53.
const STUB_PY: &str = r#"
import socket, sys
up = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
print("ready", flush=True)
while True:
    q, client = s.recvfrom(2048)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    try:
        u.sendto(q, (up, 53))
        s.sendto(u.recv(2048), client)
    except OSError:
        pass
    u.close()
"#;

#[test]
fn names_reach_programs_through_a_local_stub_resolver() {
    use std::io::BufRead;
    let mut bed = Bed::new();
    bed.serve();
    bed.serve_names(&table());
    bed.resolver_at("127.0.0.1");
    let d = Daemon::start(
        &bed,
        &["-w"],
        Some(&format!(
            "[[rule]]\nport = 53\naction = \"accept\"\n\n\
             [[rule]]\nexe = \"{}\"\nhost = \"www.test.example\"\naction = \"accept\"\n",
            curl()
        )),
    );
    let mut stub = bed
        .in_client(python())
        .args(["-c", STUB_PY, SERVER_V4])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(stub.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    bed.adopt(stub);
    // The name reached curl from the stub, not from the server: the host
    // rule is curl's own answer.
    let ok = curl_url(&bed, &format!("http://www.test.example:{HTTP_PORT}/"));
    assert!(ok.status.success() && !ok.stdout.is_empty(), "{ok:?}");
    let blocked = curl_url(&bed, &format!("http://other.example:{HTTP_PORT}/"));
    assert!(!blocked.status.success(), "{blocked:?}");
    d.wait_trace_line(&[
        "'/usr/bin/curl'",
        &format!("'{SERVER_V4}', {HTTP_PORT}) host=other.example"),
    ]);
}

#[test]
fn answers_from_a_server_of_the_programs_choosing_do_not_satisfy_host_rules() {
    let bed = bed();
    let py = python_exe();
    let d = Daemon::start(
        &bed,
        &["-w"],
        Some(&format!(
            "[[rule]]\nport = 53\naction = \"accept\"\n\n\
             [[rule]]\nexe = \"{py}\"\nhost = \"www.test.example\"\nport = {HTTP_PORT}\naction = \"accept\"\n"
        )),
    );
    // Asks the server over IPv6, an address /etc/resolv.conf does not
    // name: any server could have given that answer.
    let own_server = format!(
        "import socket, struct\n\
         q = struct.pack('!HHHHHH', 7, 0x0100, 1, 0, 0, 0) + b'\\x03www\\x04test\\x07example\\x00' + struct.pack('!HH', 1, 1)\n\
         u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
         u.settimeout(2)\n\
         u.sendto(q, ('{SERVER_V6}', 53))\n\
         assert u.recv(512)[3] & 0x0f == 0, 'no answer'\n\
         try:\n\
         \x20   socket.create_connection(('{SERVER_V4}', {HTTP_PORT}), timeout=2).close()\n\
         \x20   print('connected')\n\
         except OSError:\n\
         \x20   print('blocked')\n"
    );
    let out = bed
        .in_client(python())
        .args(["-c", &own_server])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "blocked");
    // The report still names the address.
    d.wait_trace_line(&[
        "is not in whitelist -> DROP.",
        &format!("'{SERVER_V4}', {HTTP_PORT}) host=www.test.example"),
    ]);
    // Through the system's resolver, the same name opens the way.
    let out = python_connect(&bed, "www.test.example", HTTP_PORT);
    assert!(out.status.success(), "{out:?}");
}
