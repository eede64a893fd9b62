//! Which program sent this? Each scenario runs a real client in the client
//! namespace and asks the attribution module for the owner of the flow that
//! client's packets carry, asserting the exact pid and executable.

use std::{sync::Arc, time::Duration};

use appfw::{
    attribution::{Attributor, Mode, Process, Source},
    bpf,
    identity::{FileId, Strength},
};

use crate::testbed::*;

/// Loads the kernel programs for the namespace of the calling thread; they
/// stay attached while the returned programs live (a tracepoint takes at
/// most 64 programs, so no test may keep its own for the whole run).
fn load() -> (bpf::Maps, bpf::Programs) {
    let netns = appfw::system::netns_cookie().unwrap();
    let (maps, programs, _) = bpf::load(bpf::Options {
        netns,
        events: false,
        kernel_debug: false,
        filters: false,
    })
    .unwrap();
    (maps, programs)
}

struct Outcome {
    source: Source,
    process: Option<Arc<Process>>,
    pid: u32,
    parent: Option<u32>,
}

/// Runs client `mode` against `host:port` and attributes its flow.
/// A client of an "-exit" mode exits before attribution (a short-lived
/// process).
fn attribute(bed: &Bed, attribution: Mode, mode: &str, host: &str, port: u16) -> Outcome {
    attribute_after(bed, attribution, mode, host, port, Duration::ZERO)
}

/// As [`attribute`], judging the flow `wait` after the client reported
/// (and, for "-exit" modes, exited): a datagram waiting in a busy queue.
fn attribute_after(
    bed: &Bed,
    attribution: Mode,
    mode: &str,
    host: &str,
    port: u16,
    wait: Duration,
) -> Outcome {
    bed.in_client_ns(|| {
        let (maps, _programs) = load();
        let mut a = Attributor::new(maps, attribution);
        let mut client = bed.client(mode, host, port);
        let key = client.flow_key();
        if mode.ends_with("-exit") {
            client.finish();
        }
        std::thread::sleep(wait);
        let got = a.attribute(&key, None);
        let (pid, parent) = (client.report.pid, client.report.parent);
        client.finish();
        Outcome {
            source: got.source,
            process: got.process,
            pid,
            parent,
        }
    })
}

fn assert_attributed(o: &Outcome, sources: &[Source]) {
    assert!(
        sources.contains(&o.source),
        "attributed through {:?}, expected one of {sources:?}",
        o.source
    );
    let p = o
        .process
        .as_deref()
        .unwrap_or_else(|| panic!("no process attributed (source {:?})", o.source));
    assert_eq!(p.pid, o.pid, "wrong pid: {p:?}");
    assert_eq!(
        p.exe.as_deref(),
        Some(python_exe().as_str()),
        "wrong executable: {p:?}"
    );
    // The identity is the file itself, not only a path that names it.
    assert_eq!(
        p.exe_id,
        Some(FileId::of_path(std::path::Path::new(python())).unwrap()),
        "wrong executable identity: {p:?}"
    );
}

fn ebpf_scenario(mode: &str, host: &str, port: u16, sources: &[Source]) {
    let mut bed = Bed::new();
    bed.serve();
    let o = attribute(&bed, Mode::Ebpf, mode, host, port);
    assert_attributed(&o, sources);
}

#[test]
fn tcp_v4() {
    ebpf_scenario("tcp", SERVER_V4, HTTP_PORT, &[Source::Ebpf]);
}

#[test]
fn tcp_v6() {
    ebpf_scenario("tcp", SERVER_V6, HTTP_PORT, &[Source::Ebpf]);
}

#[test]
fn udp_sendto_v4() {
    // Sent from an unbound socket: recorded with the source unspecified.
    ebpf_scenario("udp-sendto", SERVER_V4, UDP_PORT, &[Source::EbpfWildcard]);
}

#[test]
fn udp_sendto_v6() {
    ebpf_scenario("udp-sendto", SERVER_V6, UDP_PORT, &[Source::EbpfWildcard]);
}

#[test]
fn udp_connected_v4() {
    ebpf_scenario("udp-connected", SERVER_V4, UDP_PORT, &[Source::CookieJoin]);
}

#[test]
fn udp_connected_v6() {
    ebpf_scenario("udp-connected", SERVER_V6, UDP_PORT, &[Source::CookieJoin]);
}

#[test]
fn short_lived_udp_sender_is_named_after_it_exited() {
    ebpf_scenario(
        "udp-sendto-exit",
        SERVER_V4,
        UDP_PORT,
        &[Source::EbpfWildcard],
    );
}

#[test]
fn short_lived_connected_udp_sender_is_named_after_it_exited() {
    // The socket is gone from the kernel's tables: sock_release recorded it.
    ebpf_scenario("udp-connected-exit", SERVER_V4, UDP_PORT, &[Source::Ebpf]);
    ebpf_scenario(
        "udp-connected-exit",
        SERVER_V6,
        UDP_PORT,
        &[Source::EbpfWildcard],
    );
}

#[test]
fn child_after_fork_is_the_owner() {
    let mut bed = Bed::new();
    bed.serve();
    let o = attribute(&bed, Mode::Ebpf, "tcp-fork", SERVER_V4, HTTP_PORT);
    assert_attributed(&o, &[Source::Ebpf]);
    assert_eq!(
        o.process.unwrap().ppid,
        o.parent.unwrap(),
        "the child's parent is the forking python3"
    );
}

#[test]
fn second_thread_is_attributed_to_its_process() {
    let mut bed = Bed::new();
    bed.serve();
    let o = attribute(&bed, Mode::Ebpf, "tcp-thread", SERVER_V4, HTTP_PORT);
    assert_attributed(&o, &[Source::Ebpf]);
}

#[test]
fn same_tuple_in_two_namespaces_has_two_owners() {
    let mut a = Bed::new();
    let mut b = Bed::new();
    a.serve();
    b.serve();
    const SPORT: u16 = 40123;
    // One loader recording every namespace, so both flows are in one map
    // and only the namespace part of the key tells them apart.
    let (maps, programs, _) = bpf::load(bpf::Options {
        netns: 0,
        events: false,
        kernel_debug: false,
        filters: false,
    })
    .unwrap();
    let mut attributor = Attributor::new(maps, Mode::Ebpf);
    let mut ca = a.client_from("tcp", SERVER_V4, HTTP_PORT, Some(SPORT));
    let mut cb = b.client_from("tcp", SERVER_V4, HTTP_PORT, Some(SPORT));
    let (ka, kb) = (ca.flow_key(), cb.flow_key());
    assert_ne!(ka.netns, kb.netns);
    assert_eq!(
        (ka.saddr, ka.sport, ka.daddr, ka.dport),
        (kb.saddr, kb.sport, kb.daddr, kb.dport)
    );
    let pa = attributor
        .attribute(&ka, None)
        .process
        .expect("owner in namespace a");
    let pb = attributor
        .attribute(&kb, None)
        .process
        .expect("owner in namespace b");
    assert_eq!(pa.pid, ca.report.pid);
    assert_eq!(pb.pid, cb.report.pid);
    ca.finish();
    cb.finish();
    drop(programs);
}

#[test]
fn connected_udp_socket_that_sends_long_after_connecting_is_named() {
    // The record written at close must be fresh although the connect is
    // seconds old: closed by exit and by close(), IPv4 and IPv6.
    let mut bed = Bed::new();
    bed.serve();
    for mode in ["udp-connected-late-exit", "udp-connected-late-close"] {
        for host in [SERVER_V4, SERVER_V6] {
            let o = attribute(&bed, Mode::Ebpf, mode, host, UDP_PORT);
            assert_attributed(
                &o,
                &[Source::Ebpf, Source::EbpfWildcard, Source::CookieJoin],
            );
        }
    }
}

#[test]
fn datagram_judged_seconds_after_its_socket_closed_is_named() {
    // A busy queue: the datagram of a socket that is gone is judged after
    // the fast path's freshness window has passed.
    let mut bed = Bed::new();
    bed.serve();
    for mode in ["udp-connected-exit", "udp-connected-late-exit"] {
        for host in [SERVER_V4, SERVER_V6] {
            let o = attribute_after(
                &bed,
                Mode::Ebpf,
                mode,
                host,
                UDP_PORT,
                Duration::from_millis(2_500),
            );
            assert_attributed(&o, &[Source::Ebpf, Source::EbpfWildcard]);
        }
    }
}

/// The /proc fallback alone over the same scenarios: what the tool appfw
/// replaces could know. A process alive when its flow is judged must be
/// found with its pid and executable; one that has exited cannot be, and
/// must come out unknown rather than as some other process.
#[test]
fn procfs_fallback_alone() {
    let mut bed = Bed::new();
    bed.serve();
    let alive = [
        ("tcp", SERVER_V4, HTTP_PORT),
        ("tcp", SERVER_V6, HTTP_PORT),
        ("udp-sendto", SERVER_V4, UDP_PORT),
        ("udp-sendto", SERVER_V6, UDP_PORT),
        ("udp-connected", SERVER_V4, UDP_PORT),
        ("udp-connected", SERVER_V6, UDP_PORT),
        ("tcp-thread", SERVER_V4, HTTP_PORT),
    ];
    for (mode, host, port) in alive {
        let o = attribute(&bed, Mode::ProcfsOnly, mode, host, port);
        assert_eq!(o.source, Source::Procfs, "{mode} to {host}");
        assert_attributed(&o, &[Source::Procfs]);
    }
    // The forked child holds the socket; its parent, also python3, does not.
    let o = attribute(&bed, Mode::ProcfsOnly, "tcp-fork", SERVER_V4, HTTP_PORT);
    assert_attributed(&o, &[Source::Procfs]);
    for mode in ["udp-sendto-exit", "udp-connected-exit"] {
        let o = attribute(&bed, Mode::ProcfsOnly, mode, SERVER_V4, UDP_PORT);
        assert_eq!(o.source, Source::Unknown, "{mode}: {:?}", o.process);
        assert!(o.process.is_none(), "{mode}: {:?}", o.process);
    }
}

/// A process that started before appfw loaded has no kernel record: it is
/// named through /proc, its executable by stat("/proc/PID/exe").
#[test]
fn process_older_than_appfw_is_named_through_proc() {
    let mut bed = Bed::new();
    bed.serve();
    let waiting = bed.client_waiting("tcp", SERVER_V4, HTTP_PORT);
    // Make sure it runs python before the programs load.
    std::thread::sleep(Duration::from_millis(300));
    let (o, strength, origin) = bed.in_client_ns(|| {
        let (maps, _programs) = load();
        let mut a = Attributor::new(maps, Mode::Ebpf);
        let mut client = waiting.go();
        let got = a.attribute(&client.flow_key(), None);
        let pid = client.report.pid;
        client.finish();
        let p = got.process.clone();
        (
            Outcome {
                source: got.source,
                process: got.process,
                pid,
                parent: None,
            },
            p.as_ref().map(|p| p.strength),
            p.as_ref().map(|p| p.origin),
        )
    });
    assert_attributed(&o, &[Source::Ebpf]);
    assert_eq!(strength, Some(Strength::Proc));
    assert_eq!(origin, Some(appfw::attribution::ProcessOrigin::Proc));
}

/// Records of live processes are not evicted by many short-lived ones:
/// they are deleted at exit, and exited ones go to a map of their own.
#[test]
fn flood_of_short_lived_processes_does_not_evict_a_live_one() {
    use appfw_common::maps::EXITED_CAPACITY;
    let mut bed = Bed::alone();
    bed.serve();
    let (o, strength) = bed.in_client_ns(|| {
        let (maps, _programs) = load();
        let mut a = Attributor::new(maps, Mode::Ebpf);
        let mut client = bed.client("tcp", SERVER_V4, HTTP_PORT);
        let key = client.flow_key();
        // More processes than the exited map holds, and than the single
        // LRU map of every process that appfw had before (8192).
        let n = 2 * EXITED_CAPACITY + 1000;
        let out = std::process::Command::new("/usr/bin/bash")
            .args([
                "-c",
                &format!("for ((i = 0; i < {n}; i++)); do /bin/true; done"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let got = a.attribute(&key, None);
        let pid = client.report.pid;
        client.finish();
        let strength = got.process.as_ref().map(|p| (p.strength, p.origin));
        (
            Outcome {
                source: got.source,
                process: got.process,
                pid,
                parent: None,
            },
            strength,
        )
    });
    assert_attributed(&o, &[Source::Ebpf]);
    assert_eq!(
        strength,
        Some((
            Strength::Kernel,
            appfw::attribution::ProcessOrigin::ExecRecord
        )),
        "the live process's kernel record is gone"
    );
}
