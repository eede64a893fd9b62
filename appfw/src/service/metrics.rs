//! `/metrics` in the Prometheus text format (`metrics = "ADDR"` or
//! `--metrics ADDR`). Each scrape renders what the queue thread last
//! published, the kernel's queue counters and the eBPF hooks' counters;
//! nothing here runs on the packet path.

use std::time::Duration;

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    attribution::Source,
    kernel_queue::KernelQueue,
    stats::{Counters, REASON_NAMES, VERDICT_NAMES},
};

/// What one scrape shows.
pub struct Snapshot<'a> {
    pub counters: Counters,
    pub kernel_queue: Option<KernelQueue>,
    /// Events the eBPF programs counted, by name.
    pub hooks: &'a [(&'static str, u64)],
}

type Labels = Vec<(&'static str, String)>;

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

fn labelled(reg: &mut Registry, name: &str, help: &str, values: &[(Labels, u64)]) {
    let f = Family::<Labels, Counter>::default();
    for (labels, v) in values {
        f.get_or_create(labels).inc_by(*v);
    }
    reg.register(name, help, f);
}

/// The text a scrape returns.
pub fn render(s: &Snapshot) -> String {
    let c = &s.counters;
    let mut reg = Registry::default();
    counter(
        &mut reg,
        "appfw_packets",
        "Packets appfw judged from its queue",
        c.packets,
    );
    let mut verdicts = Vec::new();
    for (vi, v) in VERDICT_NAMES.iter().enumerate() {
        for (ri, r) in REASON_NAMES.iter().enumerate() {
            verdicts.push((
                vec![("verdict", v.to_string()), ("reason", r.to_string())],
                c.verdicts[vi][ri],
            ));
        }
    }
    labelled(
        &mut reg,
        "appfw_verdicts",
        "Decisions by verdict and reason",
        &verdicts,
    );
    let sources: Vec<_> = Source::ALL
        .iter()
        .map(|src| {
            (
                vec![("source", src.name().to_string())],
                c.attribution.get(*src),
            )
        })
        .collect();
    labelled(
        &mut reg,
        "appfw_flows",
        "Judged packets by how their owner was found",
        &sources,
    );
    for (name, help, v) in [
        (
            "appfw_unparsed_packets",
            "Packets appfw could not read (judged as of an unknown owner)",
            c.unparsed,
        ),
        (
            "appfw_socket_records_lost",
            "Packets whose socket record was overrun while they waited (queue overflow)",
            c.sender_lost,
        ),
        (
            "appfw_receive_overruns",
            "Receive buffer overruns (ENOBUFS): the kernel dropped packets",
            c.overruns,
        ),
        (
            "appfw_recv_errors",
            "Failed reads of the queue",
            c.recv_errors,
        ),
        (
            "appfw_verdict_errors",
            "Verdicts the kernel did not take",
            c.verdict_errors,
        ),
        (
            "appfw_reports_dropped",
            "Report lines lost because the reporter lagged",
            c.reports_dropped,
        ),
        (
            "appfw_internal_errors",
            "Packets whose judging failed internally",
            c.internal_errors,
        ),
    ] {
        counter(&mut reg, name, help, v);
    }
    if let Some(k) = s.kernel_queue {
        labelled(
            &mut reg,
            "appfw_kernel_queue_dropped",
            "Packets the kernel dropped: queue full, or appfw's receive buffer full",
            &[
                (vec![("cause", "queue-full".into())], k.queue_dropped),
                (
                    vec![("cause", "receive-buffer-full".into())],
                    k.user_dropped,
                ),
            ],
        );
        counter(
            &mut reg,
            "appfw_kernel_queue_packets",
            "Packets the kernel numbered for appfw's queue",
            k.id_sequence,
        );
        let waiting: Gauge = Gauge::default();
        waiting.set(k.waiting as i64);
        reg.register(
            "appfw_kernel_queue_waiting",
            "Packets waiting for a verdict",
            waiting,
        );
    }
    let hooks: Vec<_> = s
        .hooks
        .iter()
        .map(|(name, n)| (vec![("hook", name.to_string())], *n))
        .collect();
    labelled(
        &mut reg,
        "appfw_kernel_hook_events",
        "Events the eBPF programs counted, by hook",
        &hooks,
    );
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String does not fail");
    out
}

/// Answers one HTTP request with `body` for `GET /metrics`, 404 otherwise.
/// Bounded: 8 KiB of request, 5 seconds.
pub async fn answer(mut stream: tokio::net::TcpStream, body: String) {
    let exchange = async {
        let mut req = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        let line = req.split(|&b| b == b'\r').next().unwrap_or_default();
        let ok = line.starts_with(b"GET /metrics ") || line == b"GET /metrics";
        let (status, body) = if ok {
            ("200 OK", body)
        } else {
            (
                "404 Not Found",
                "only /metrics is served here\n".to_string(),
            )
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), exchange).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_with_their_labels() {
        let mut c = Counters {
            packets: 5,
            blocked: 2,
            ..Counters::default()
        };
        c.verdicts[1][3] = 2;
        let hooks = [("connect4", 9)];
        let text = render(&Snapshot {
            counters: c,
            kernel_queue: Some(KernelQueue {
                waiting: 1,
                queue_dropped: 3,
                user_dropped: 4,
                id_sequence: 12,
            }),
            hooks: &hooks,
        });
        for line in [
            "appfw_packets_total 5",
            "appfw_verdicts_total{verdict=\"drop\",reason=\"in-blacklist\"} 2",
            "appfw_kernel_queue_dropped_total{cause=\"queue-full\"} 3",
            "appfw_kernel_queue_waiting 1",
            "appfw_kernel_hook_events_total{hook=\"connect4\"} 9",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
    }

    #[test]
    fn the_grafana_dashboard_plots_only_metrics_that_exist() {
        let text = render(&Snapshot {
            counters: Counters::default(),
            kernel_queue: Some(KernelQueue::default()),
            hooks: &[("connect4", 0)],
        });
        let dashboard = include_str!("../../../config/grafana-appfw.json");
        let mut seen = 0;
        for (i, _) in dashboard.match_indices("appfw_") {
            let name: String = dashboard[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                text.lines().any(|l| l.starts_with(&name)),
                "the dashboard queries {name}, which /metrics does not serve"
            );
            seen += 1;
        }
        assert!(seen >= 6);
    }
}
