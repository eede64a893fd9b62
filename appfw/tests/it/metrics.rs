//! `/metrics`, scraped inside the test's client namespace after real
//! traffic.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use crate::testbed::*;

/// GET `path` from appfw's metrics address in the client namespace;
/// returns the whole response.
fn get(bed: &Bed, addr: &str, path: &str) -> String {
    bed.in_client_ns(|| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

fn value(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_count_real_verdicts_and_kernel_queue() {
    let mut bed = Bed::new();
    bed.serve();
    let d = Daemon::start(
        &bed,
        &["-b"],
        Some("[global]\nblacklist = [\"/usr/bin/curl\"]\nmetrics = \"127.0.0.1:9464\"\n"),
    );
    for _ in 0..3 {
        assert!(!bed.curl(SERVER_V4, 1.0).status.success());
    }
    for _ in 0..2 {
        assert!(bed.python_get(SERVER_V4, 5.0).status.success());
    }
    // Published about once a second by the queue thread.
    let text = wait_for(Duration::from_secs(5), "the verdicts in /metrics", || {
        let r = get(&bed, "127.0.0.1:9464", "/metrics");
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        let blocked = value(
            &r,
            "appfw_verdicts_total{verdict=\"drop\",reason=\"in-blacklist\"}",
        )?;
        let accepted = value(
            &r,
            "appfw_verdicts_total{verdict=\"accept\",reason=\"not-in-blacklist\"}",
        )?;
        // The kernel's own packets (IPv6 neighbour discovery) count as
        // accepted too: wait for python's flows themselves.
        let python = format!(
            "appfw_executable_flows_total{{exe=\"{}\",verdict=\"accept\"}}",
            python_exe()
        );
        (blocked >= 3 && accepted >= 2 && value(&r, &python) >= Some(2)).then_some(r)
    });
    // Each blocked connection is one SYN judged for its socket: retries
    // are decided in the kernel, so no more than a few per curl.
    let blocked = value(
        &text,
        "appfw_verdicts_total{verdict=\"drop\",reason=\"in-blacklist\"}",
    )
    .unwrap();
    assert!(
        blocked <= 6,
        "{blocked} drops for 3 blocked connects:\n{text}"
    );
    assert_eq!(
        value(
            &text,
            "appfw_verdicts_total{verdict=\"accept\",reason=\"monitor\"}"
        ),
        Some(0)
    );
    let packets = value(&text, "appfw_packets_total").unwrap();
    assert!(packets >= 4, "{text}");
    let socket = value(&text, "appfw_flows_total{source=\"socket\"}").unwrap();
    assert!(socket >= 1, "{text}");
    assert!(value(&text, "appfw_kernel_queue_packets_total").unwrap() >= packets);
    assert_eq!(
        value(
            &text,
            "appfw_kernel_queue_dropped_total{cause=\"queue-full\"}"
        ),
        Some(0)
    );
    assert!(
        text.contains("appfw_kernel_hook_events_total{hook="),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");

    // Flows per executable: each connect is one flow of its program.
    let flows = |exe: &str, verdict: &str| {
        let series = format!("appfw_executable_flows_total{{exe=\"{exe}\",verdict=\"{verdict}\"}}");
        value(&text, &series).unwrap_or_else(|| panic!("{series} not in:\n{text}"))
    };
    assert_eq!(flows(curl(), "block"), 3, "{text}");
    assert_eq!(flows(curl(), "accept"), 0, "{text}");
    assert_eq!(flows(&python_exe(), "accept"), 2, "{text}");
    assert_eq!(flows(&python_exe(), "block"), 0, "{text}");
    assert_eq!(flows("other", "accept"), 0, "{text}");
    // Both histograms count every judged packet, published with it.
    for h in [
        "appfw_verdict_latency_seconds",
        "appfw_decision_time_seconds",
    ] {
        assert_eq!(value(&text, &format!("{h}_count")), Some(packets), "{text}");
        assert_eq!(
            value(&text, &format!("{h}_bucket{{le=\"+Inf\"}}")),
            Some(packets),
            "{text}"
        );
    }
    // Five processes, each named once.
    let misses = value(&text, "appfw_process_cache_lookups_total{result=\"miss\"}").unwrap();
    assert!(misses >= 5, "{text}");
    assert!(
        value(&text, "appfw_process_cache_entries").unwrap() >= 5,
        "{text}"
    );
    // The sockets of this namespace's processes are in the map.
    assert!(
        value(&text, "appfw_map_entries{map=\"APPFW_SOCKETS\"}").unwrap() >= 1,
        "{text}"
    );
    assert_eq!(
        value(&text, "appfw_map_capacity{map=\"APPFW_SOCKETS\"}"),
        Some(65536)
    );

    let r = get(&bed, "127.0.0.1:9464", "/other");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    d.stop();
}
