//! How full the BPF maps are: entries against capacity, for /metrics.
//!
//! A full map silently misses (a socket without a record is named through
//! /proc, or not at all), so its fill level is worth watching. The kernel
//! keeps no entry count that userspace can read for a hash map, so the
//! keys are walked (one `bpf()` call per entry) through a second file
//! descriptor of each map, at scrape time, on a blocking worker: never on
//! the queue thread. A scrape flood reuses the last count for
//! [`RECOUNT_AFTER`].

use std::{
    os::fd::AsFd,
    time::{Duration, Instant},
};

use appfw_common::maps as names;
use aya::{
    maps::{HashMap, IterableMap, Map, MapData, MapError},
    Pod,
};

use crate::bpf::Maps;

/// Counts younger than this are served again.
const RECOUNT_AFTER: Duration = Duration::from_secs(1);

/// One map's fill level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

type Count = Box<dyn Fn() -> u64 + Send>;

pub struct MapFill {
    maps: Vec<(&'static str, u32, Count)>,
    last: Option<(Instant, Vec<Level>)>,
}

impl MapFill {
    /// Opens a second handle to each of the daemon's hash maps. A new map
    /// is one more line here.
    pub fn of(maps: &Maps) -> Result<MapFill, MapError> {
        Ok(MapFill {
            maps: vec![
                counted(names::FLOWS, names::FLOWS_CAPACITY, &maps.flows)?,
                counted(names::SOCKETS, names::SOCKETS_CAPACITY, &maps.sockets)?,
                counted(
                    names::CLOSED_SOCKETS,
                    names::CLOSED_SOCKETS_CAPACITY,
                    &maps.closed_sockets,
                )?,
                counted(names::VERDICTS, names::VERDICTS_CAPACITY, &maps.verdicts)?,
                counted(names::QUEUED, names::QUEUED_CAPACITY, &maps.queued)?,
                counted(
                    names::PROC_START,
                    names::PROC_START_CAPACITY,
                    &maps.proc_start,
                )?,
                counted(names::PROCS, names::PROCS_CAPACITY, &maps.procs)?,
                counted(names::EXITED, names::EXITED_CAPACITY, &maps.exited)?,
            ],
            last: None,
        })
    }

    /// Every map's level, counted now unless counted within
    /// [`RECOUNT_AFTER`]. Blocking: up to one syscall per entry.
    pub fn levels(&mut self) -> Vec<Level> {
        if let Some((at, levels)) = &self.last {
            if at.elapsed() < RECOUNT_AFTER {
                return levels.clone();
            }
        }
        let levels: Vec<Level> = self
            .maps
            .iter()
            .map(|(map, capacity, count)| Level {
                map,
                entries: count(),
                capacity: u64::from(*capacity),
            })
            .collect();
        self.last = Some((Instant::now(), levels.clone()));
        levels
    }
}

fn counted<K: Pod + Send, V: Pod + Send>(
    name: &'static str,
    capacity: u32,
    map: &HashMap<MapData, K, V>,
) -> Result<(&'static str, u32, Count), MapError> {
    let fd = map
        .map()
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|io_error| aya::sys::SyscallError {
            call: "dup",
            io_error,
        })?;
    let own: HashMap<MapData, K, V> =
        HashMap::try_from(Map::from_map_data(MapData::from_fd(fd)?)?)?;
    // Keys deleted during the walk make the kernel start over: bounded by
    // twice the capacity, and never more than the capacity reported.
    let limit = 2 * capacity as usize;
    let count = move || {
        let n = own.keys().take(limit).filter(Result::is_ok).count() as u64;
        n.min(u64::from(capacity))
    };
    Ok((name, capacity, Box::new(count)))
}
