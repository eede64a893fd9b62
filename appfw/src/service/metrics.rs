//! `/metrics` in the Prometheus text format (`metrics = "ADDR"` or
//! `--metrics ADDR`). Each scrape renders what the queue thread last
//! published, the kernel's queue counters and the eBPF hooks' counters;
//! nothing here runs on the packet path.

use std::time::Duration;

use prometheus_client::{
    encoding::{text::encode, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, MetricType},
    registry::{Registry, Unit},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::map_fill::Level;
use crate::{
    attribution::Source,
    kernel_queue::KernelQueue,
    stats::{Buckets, Counters, BUCKET_BOUNDS_NS, REASON_NAMES, VERDICT_NAMES},
    talkers::Top,
};

/// What one scrape shows.
pub struct Snapshot<'a> {
    pub counters: Counters,
    pub kernel_queue: Option<KernelQueue>,
    /// Events the eBPF programs counted, by name.
    pub hooks: &'a [(&'static str, u64)],
    /// The top executables by flows.
    pub talkers: &'a Top,
    /// The BPF maps' fill levels (empty when they could not be counted).
    pub maps: &'a [Level],
}

/// A histogram the queue thread already put in buckets ([`Buckets`]).
#[derive(Debug)]
struct Seconds(Buckets);

impl EncodeMetric for Seconds {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let b = &self.0;
        let buckets: Vec<(f64, u64)> = BUCKET_BOUNDS_NS
            .iter()
            .map(|&ns| ns as f64 / 1e9)
            .chain([f64::INFINITY])
            .zip(b.counts)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(b.sum_ns as f64 / 1e9, b.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
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
    for (name, help, b) in [
        (
            "appfw_verdict_latency",
            "Time from receiving a packet to its verdict syscall returning",
            c.latency,
        ),
        (
            "appfw_decision_time",
            "Time from receiving a packet to its verdict decided (parsing, attribution, policy)",
            c.decision,
        ),
    ] {
        reg.register_with_unit(name, help, Unit::Seconds, Seconds(b));
    }
    let cache = c.attribution.2;
    labelled(
        &mut reg,
        "appfw_process_cache_lookups",
        "Owners named from the process cache (hit) or anew (miss)",
        &[
            (vec![("result", "hit".into())], cache.hits),
            (vec![("result", "miss".into())], cache.misses),
        ],
    );
    let entries: Gauge = Gauge::default();
    entries.set(cache.entries as i64);
    reg.register(
        "appfw_process_cache_entries",
        "Processes in the cache",
        entries,
    );
    let mut flows = Vec::new();
    let named = s.talkers.top.iter().map(|t| (t.exe.to_string(), t.flows));
    let rest = [
        ("other".to_string(), s.talkers.other),
        ("unknown".to_string(), s.talkers.unknown),
    ];
    for (exe, f) in named.chain(rest) {
        for (verdict, n) in [("accept", f.accepted), ("block", f.blocked)] {
            flows.push((vec![("exe", exe.clone()), ("verdict", verdict.into())], n));
        }
    }
    labelled(
        &mut reg,
        "appfw_executable_flows",
        "Flows judged per executable: the top ones by name, the rest as other, unknown owners as unknown",
        &flows,
    );
    if !s.maps.is_empty() {
        let entries = Family::<Labels, Gauge>::default();
        let capacity = Family::<Labels, Gauge>::default();
        for l in s.maps {
            let labels = vec![("map", l.map.to_string())];
            entries.get_or_create(&labels).set(l.entries as i64);
            capacity.get_or_create(&labels).set(l.capacity as i64);
        }
        reg.register("appfw_map_entries", "Entries in appfw's BPF maps", entries);
        reg.register(
            "appfw_map_capacity",
            "How many entries appfw's BPF maps hold at most",
            capacity,
        );
    }
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
            talkers: &Top::default(),
            maps: &[],
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
    fn histograms_talkers_cache_and_maps_appear() {
        let mut c = Counters::default();
        // 3 decisions: 2 in the 10-25 us bucket, one above every bound.
        c.decision.counts[2] = 2;
        c.decision.counts[BUCKET_BOUNDS_NS.len()] = 1;
        c.decision.count = 3;
        c.decision.sum_ns = 2_000_040_000;
        c.attribution.2 = crate::attribution::CacheCounts {
            hits: 7,
            misses: 2,
            entries: 2,
        };
        let mut top = Top::default();
        top.top.push(crate::talkers::Talker {
            exe: "/usr/bin/curl".into(),
            flows: crate::talkers::Flows {
                accepted: 0,
                blocked: 3,
            },
        });
        top.other.accepted = 4;
        let text = render(&Snapshot {
            counters: c,
            kernel_queue: None,
            hooks: &[],
            talkers: &top,
            maps: &[Level {
                map: "APPFW_SOCKETS",
                entries: 12,
                capacity: 65536,
            }],
        });
        for line in [
            "# TYPE appfw_decision_time_seconds histogram",
            "appfw_decision_time_seconds_count 3",
            "appfw_decision_time_seconds_sum 2.00004",
            "appfw_decision_time_seconds_bucket{le=\"0.00001\"} 0",
            "appfw_decision_time_seconds_bucket{le=\"0.000025\"} 2",
            "appfw_decision_time_seconds_bucket{le=\"1.0\"} 2",
            "appfw_decision_time_seconds_bucket{le=\"+Inf\"} 3",
            "appfw_verdict_latency_seconds_count 0",
            "appfw_process_cache_lookups_total{result=\"hit\"} 7",
            "appfw_process_cache_entries 2",
            "appfw_executable_flows_total{exe=\"/usr/bin/curl\",verdict=\"block\"} 3",
            "appfw_executable_flows_total{exe=\"other\",verdict=\"accept\"} 4",
            "appfw_executable_flows_total{exe=\"unknown\",verdict=\"block\"} 0",
            "appfw_map_entries{map=\"APPFW_SOCKETS\"} 12",
            "appfw_map_capacity{map=\"APPFW_SOCKETS\"} 65536",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
    }

    #[test]
    fn an_executable_path_cannot_forge_a_series() {
        let mut top = Top::default();
        top.top.push(crate::talkers::Talker {
            exe: "/tmp/x\",verdict=\"accept\"} 1\nappfw_packets_total 999\n#".into(),
            flows: crate::talkers::Flows {
                accepted: 1,
                blocked: 0,
            },
        });
        let text = render(&Snapshot {
            counters: Counters::default(),
            kernel_queue: None,
            hooks: &[],
            talkers: &top,
            maps: &[],
        });
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("appfw_packets_total 999")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("appfw_executable_flows_total{exe=\"/tmp/x\\\""))
                && text.lines().any(|l| l == "appfw_packets_total 0"),
            "{text}"
        );
    }

    #[test]
    fn the_grafana_dashboard_plots_only_metrics_that_exist() {
        let text = render(&Snapshot {
            counters: Counters::default(),
            kernel_queue: Some(KernelQueue::default()),
            hooks: &[("connect4", 0)],
            talkers: &Top::default(),
            maps: &[Level {
                map: "APPFW_FLOWS",
                entries: 0,
                capacity: 1,
            }],
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
