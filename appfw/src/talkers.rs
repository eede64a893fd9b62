//! Flows per executable: the one place that counts a flow for a program.
//!
//! The queue thread counts each flow it judges ([`Talkers::count`]);
//! flows the kernel decided on its own are added with one call to
//! [`Talkers::add`]: for a per-process verdict whose `applied` count grew
//! from `a` to `b` since it was last read, `add(exe, verdict, b - a)`. The table is bounded:
//! it counts at most [`TRACKED`] executables by name, the rest as `other`,
//! so neither memory nor the metrics' label values grow with what runs on
//! the machine. It is owned by the queue thread; [`Talkers::publish`]
//! copies the top [`TOP`] into a preallocated [`Top`] without allocating
//! (names are shared `Arc<str>`).

use std::{cmp::Reverse, collections::HashMap, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::{attribution::Process, policy::Verdict};

/// Executables counted by name; later ones count as `other`.
pub const TRACKED: usize = 1024;
/// Executables published by name (/metrics, `appfw status`).
pub const TOP: usize = 10;

/// Flows by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flows {
    pub accepted: u64,
    pub blocked: u64,
}

impl Flows {
    pub fn total(&self) -> u64 {
        self.accepted + self.blocked
    }

    fn add(&mut self, verdict: Verdict, n: u64) {
        match verdict {
            Verdict::Accept => self.accepted += n,
            Verdict::Block(_) => self.blocked += n,
        }
    }

    fn merge(&mut self, other: Flows) {
        self.accepted += other.accepted;
        self.blocked += other.blocked;
    }
}

pub struct Talkers {
    by_exe: HashMap<Arc<str>, Flows>,
    /// Executables beyond [`TRACKED`].
    untracked: Flows,
    /// Flows whose executable is not known (no owner, or no path).
    unknown: Flows,
}

impl Default for Talkers {
    fn default() -> Self {
        Talkers {
            by_exe: HashMap::with_capacity(TRACKED),
            untracked: Flows::default(),
            unknown: Flows::default(),
        }
    }
}

impl Talkers {
    /// Counts one flow of `process` (`None`: owner unknown).
    pub fn count(&mut self, process: Option<&Process>, verdict: Verdict) {
        self.add(process.and_then(|p| p.exe.as_deref()), verdict, 1);
    }

    /// Counts `n` flows of the executable `exe` (its display path,
    /// [`Process::exe`]; `None`: unknown). A hash lookup; the first flow of
    /// a new executable stores its name once.
    pub fn add(&mut self, exe: Option<&str>, verdict: Verdict, n: u64) {
        let Some(exe) = exe else {
            self.unknown.add(verdict, n);
            return;
        };
        if let Some(f) = self.by_exe.get_mut(exe) {
            f.add(verdict, n);
        } else if self.by_exe.len() < TRACKED {
            let mut f = Flows::default();
            f.add(verdict, n);
            self.by_exe.insert(Arc::from(exe), f);
        } else {
            self.untracked.add(verdict, n);
        }
    }

    /// Writes the [`TOP`] executables by flows (most first, ties by name)
    /// into `top`, everything else into `top.other`. Allocates nothing
    /// once `top` has its capacity.
    pub fn publish(&self, top: &mut Top) {
        top.top.clear();
        top.other = self.untracked;
        top.unknown = self.unknown;
        for (exe, flows) in &self.by_exe {
            let rank = (flows.total(), Reverse(&**exe));
            let at = top
                .top
                .partition_point(|t| (t.flows.total(), Reverse(&*t.exe)) >= rank);
            if at >= TOP {
                top.other.merge(*flows);
                continue;
            }
            if top.top.len() == TOP {
                let out = top.top.pop().expect("full");
                top.other.merge(out.flows);
            }
            top.top.insert(
                at,
                Talker {
                    exe: exe.clone(),
                    flows: *flows,
                },
            );
        }
    }
}

/// One executable's flows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Talker {
    pub exe: Arc<str>,
    pub flows: Flows,
}

/// What the queue thread publishes: the top executables by flows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Top {
    /// At most [`TOP`], most flows first.
    pub top: Vec<Talker>,
    /// Flows of every other executable.
    pub other: Flows,
    /// Flows whose executable is not known.
    pub unknown: Flows,
}

impl Default for Top {
    fn default() -> Self {
        Top {
            top: Vec::with_capacity(TOP),
            other: Flows::default(),
            unknown: Flows::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Action;

    const DROP: Verdict = Verdict::Block(Action::Drop);

    #[test]
    fn the_top_executables_are_named_and_the_rest_are_other() {
        let mut t = Talkers::default();
        for i in 0..TOP + 5 {
            let exe = format!("/usr/bin/p{i:02}");
            for _ in 0..=i {
                t.add(Some(&exe), Verdict::Accept, 1);
            }
        }
        t.add(Some("/usr/bin/p14"), DROP, 100);
        t.count(None, DROP);
        let mut top = Top::default();
        let cap = top.top.capacity();
        t.publish(&mut top);
        assert_eq!(top.top.len(), TOP);
        assert_eq!(top.top.capacity(), cap, "publishing does not allocate");
        assert_eq!(&*top.top[0].exe, "/usr/bin/p14");
        assert_eq!(
            top.top[0].flows,
            Flows {
                accepted: 15,
                blocked: 100
            }
        );
        assert_eq!(&*top.top[1].exe, "/usr/bin/p13");
        // p00..p04 (1 + 2 + 3 + 4 + 5 flows) did not make the top 10.
        assert_eq!(top.other.accepted, 15);
        assert_eq!(top.unknown.blocked, 1);
        let all: u64 = top.top.iter().map(|t| t.flows.total()).sum::<u64>()
            + top.other.total()
            + top.unknown.total();
        assert_eq!(all, (1..=(TOP as u64 + 5)).sum::<u64>() + 100 + 1);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = Talkers::default();
        for i in 0..TRACKED + 10 {
            t.add(Some(&format!("/opt/x{i}")), Verdict::Accept, 1);
        }
        assert_eq!(t.by_exe.len(), TRACKED);
        assert_eq!(t.untracked.accepted, 10);
        // A tracked executable is still counted by name.
        t.add(Some("/opt/x0"), Verdict::Accept, 5);
        assert_eq!(t.by_exe["/opt/x0"].accepted, 6);
    }
}
