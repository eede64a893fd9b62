//! What a system service needs besides judging packets: telling the
//! service manager how it is doing (`notify`). These rooms only read what
//! the queue thread publishes; none of them touches the packet path.
//! `control`: the `appfw status` socket; `metrics`: /metrics;
//! `map_fill`: how full the BPF maps are, counted at scrape time.

pub mod control;
pub mod journal;
pub mod map_fill;
pub mod metrics;
pub mod notify;
