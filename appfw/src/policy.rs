//! The decision: (mode, lists, owner) -> accept or block, and why.
//!
//! A pure function of its inputs, allocation-free, so it can sit on the
//! packet path and be tested without a kernel.

use std::collections::HashSet;

use crate::{
    attribution::Process,
    config::{Action, Config, Entry, Unknown},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Monitor,
    Whitelist,
    Blacklist,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::Whitelist => "whitelist",
            Mode::Blacklist => "blacklist",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Block(Action),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Monitor,
    InWhitelist,
    NotInWhitelist,
    InBlacklist,
    NotInBlacklist,
    /// No owner was found.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
}

/// A list prepared for lookups: executable paths in a hash set (a policy
/// may list thousands), command prefixes in order.
#[derive(Clone, Debug, Default)]
struct List {
    exes: HashSet<String>,
    commands: Vec<Entry>,
}

impl List {
    fn new(entries: &[Entry]) -> List {
        let mut list = List::default();
        for e in entries {
            match e {
                Entry::Exe { path, resolved } => {
                    list.exes.insert(path.clone());
                    list.exes.extend(resolved.clone());
                }
                Entry::Command { .. } => list.commands.push(e.clone()),
            }
        }
        list
    }

    fn contains(&self, p: &Process) -> bool {
        p.exe.as_deref().is_some_and(|exe| self.exes.contains(exe))
            || self.commands.iter().any(|e| matches(e, p))
    }
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub mode: Mode,
    whitelist: List,
    blacklist: List,
    action: Action,
    unknown: Unknown,
}

impl Policy {
    pub fn new(mode: Mode, config: &Config) -> Self {
        let unknown = config.unknown.unwrap_or(match mode {
            Mode::Whitelist => Unknown::Drop,
            Mode::Monitor | Mode::Blacklist => Unknown::Accept,
        });
        Policy {
            mode,
            whitelist: List::new(&config.whitelist),
            blacklist: List::new(&config.blacklist),
            action: config.action,
            unknown,
        }
    }

    /// A packet appfw cannot tie to its socket because it was overrun:
    /// blocked (dropped) unless appfw only monitors.
    pub fn overloaded(&self) -> Decision {
        Decision {
            verdict: match self.mode {
                Mode::Monitor => Verdict::Accept,
                _ => Verdict::Block(Action::Drop),
            },
            reason: Reason::Unknown,
        }
    }

    pub fn decide(&self, process: Option<&Process>) -> Decision {
        let block = Verdict::Block(self.action);
        let Some(p) = process else {
            let verdict = match (self.mode, self.unknown) {
                (Mode::Monitor, _) | (_, Unknown::Accept) => Verdict::Accept,
                (_, Unknown::Drop) => block,
            };
            return Decision {
                verdict,
                reason: Reason::Unknown,
            };
        };
        let (verdict, reason) = match self.mode {
            Mode::Monitor => (Verdict::Accept, Reason::Monitor),
            Mode::Whitelist if self.whitelist.contains(p) => (Verdict::Accept, Reason::InWhitelist),
            Mode::Whitelist => (block, Reason::NotInWhitelist),
            Mode::Blacklist if self.blacklist.contains(p) => (block, Reason::InBlacklist),
            Mode::Blacklist => (Verdict::Accept, Reason::NotInBlacklist),
        };
        Decision { verdict, reason }
    }
}

/// Does `entry` name process `p`?
pub fn matches(entry: &Entry, p: &Process) -> bool {
    match entry {
        Entry::Exe { path, resolved } => p
            .exe
            .as_deref()
            .is_some_and(|exe| exe == path || resolved.as_deref() == Some(exe)),
        Entry::Command { words } => {
            if p.args.is_empty() {
                // Only the kernel's thread name is known.
                return words.len() == 1 && words[0] == p.comm;
            }
            if p.args.len() < words.len() {
                return false;
            }
            let first = &words[0];
            let arg0 = &p.args[0];
            let first_ok = if first.starts_with('/') {
                arg0 == first || p.exe.as_deref() == Some(first.as_str())
            } else {
                arg0 == first || arg0.rsplit('/').next() == Some(first.as_str())
            };
            first_ok && words[1..].iter().zip(&p.args[1..]).all(|(w, a)| w == a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(exe: &str, args: &[&str]) -> Process {
        Process::example(exe, args)
    }

    fn config(white: &[&str], black: &[&str]) -> Config {
        Config {
            whitelist: white.iter().map(|e| Entry::parse(e).unwrap()).collect(),
            blacklist: black.iter().map(|e| Entry::parse(e).unwrap()).collect(),
            ..Config::default()
        }
    }

    #[test]
    fn blacklist_blocks_listed_exe_only() {
        let p = Policy::new(Mode::Blacklist, &config(&[], &["/usr/bin/curl"]));
        let curl = proc("/usr/bin/curl", &["curl", "http://198.51.100.2/"]);
        let py = proc("/usr/bin/python3.11", &["python3", "-c", "x"]);
        assert_eq!(
            p.decide(Some(&curl)),
            Decision {
                verdict: Verdict::Block(Action::Drop),
                reason: Reason::InBlacklist
            }
        );
        assert_eq!(p.decide(Some(&py)).verdict, Verdict::Accept);
    }

    #[test]
    fn whitelist_accepts_listed_and_blocks_the_rest() {
        let p = Policy::new(Mode::Whitelist, &config(&["/usr/bin/python3.11"], &[]));
        assert_eq!(
            p.decide(Some(&proc("/usr/bin/python3.11", &["python3"])))
                .reason,
            Reason::InWhitelist
        );
        let d = p.decide(Some(&proc("/usr/bin/curl", &["curl"])));
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Block(Action::Drop), Reason::NotInWhitelist)
        );
    }

    #[test]
    fn unknown_owner_defaults_depend_on_mode() {
        let c = config(&[], &[]);
        assert_eq!(
            Policy::new(Mode::Whitelist, &c).decide(None).verdict,
            Verdict::Block(Action::Drop)
        );
        assert_eq!(
            Policy::new(Mode::Blacklist, &c).decide(None).verdict,
            Verdict::Accept
        );
        assert_eq!(
            Policy::new(Mode::Monitor, &c).decide(None).verdict,
            Verdict::Accept
        );
        let mut c2 = c.clone();
        c2.unknown = Some(Unknown::Drop);
        assert_eq!(
            Policy::new(Mode::Blacklist, &c2).decide(None).reason,
            Reason::Unknown
        );
        assert_eq!(
            Policy::new(Mode::Blacklist, &c2).decide(None).verdict,
            Verdict::Block(Action::Drop)
        );
        c2.unknown = Some(Unknown::Accept);
        assert_eq!(
            Policy::new(Mode::Whitelist, &c2).decide(None).verdict,
            Verdict::Accept
        );
    }

    #[test]
    fn command_prefix_matches_first_words() {
        let e = Entry::parse("nc 192.168.58.1").unwrap();
        assert!(matches(
            &e,
            &proc("/usr/bin/nc.openbsd", &["nc", "192.168.58.1", "631"])
        ));
        assert!(matches(
            &e,
            &proc("/usr/bin/nc.openbsd", &["/bin/nc", "192.168.58.1"])
        ));
        assert!(!matches(
            &e,
            &proc("/usr/bin/nc.openbsd", &["nc", "192.168.58.2"])
        ));
        assert!(!matches(&e, &proc("/usr/bin/nc.openbsd", &["nc"])));
        let py = Entry::parse("python3 -c").unwrap();
        assert!(matches(
            &py,
            &proc("/usr/bin/python3.11", &["python3", "-c", "print(1)"])
        ));
        assert!(!matches(
            &py,
            &proc("/usr/bin/python3.11", &["python3", "script.py"])
        ));
    }

    #[test]
    fn absolute_command_word_matches_exe_or_argv0() {
        let e = Entry::parse("/usr/bin/python3.11 -c").unwrap();
        assert!(matches(
            &e,
            &proc("/usr/bin/python3.11", &["python3", "-c"])
        ));
        assert!(matches(&e, &proc("/other", &["/usr/bin/python3.11", "-c"])));
    }

    #[test]
    fn large_lists_match_exactly() {
        let many: Vec<String> = (0..1000).map(|i| format!("/opt/x/prog{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let p = Policy::new(Mode::Blacklist, &config(&[], &refs));
        assert_eq!(
            p.decide(Some(&proc("/opt/x/prog999", &["prog999"]))).reason,
            Reason::InBlacklist
        );
        assert_eq!(
            p.decide(Some(&proc("/opt/x/prog1000", &["prog1000"])))
                .reason,
            Reason::NotInBlacklist
        );
    }

    #[test]
    fn reject_action_is_carried() {
        let mut c = config(&[], &["/usr/bin/curl"]);
        c.action = Action::Reject;
        let d = Policy::new(Mode::Blacklist, &c).decide(Some(&proc("/usr/bin/curl", &["curl"])));
        assert_eq!(d.verdict, Verdict::Block(Action::Reject));
    }

    #[test]
    fn comm_only_process_matches_single_word_entries() {
        let mut p = proc("/x", &[]);
        p.exe = None;
        p.comm = "curl".into();
        assert!(matches(&Entry::parse("curl").unwrap(), &p));
        assert!(!matches(&Entry::parse("/usr/bin/curl").unwrap(), &p));
    }
}
