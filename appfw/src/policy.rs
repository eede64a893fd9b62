//! The decision: (mode, lists, owner) -> accept or block, and why.
//!
//! A pure function of its inputs, allocation-free, so it can sit on the
//! packet path and be tested without a kernel. Programs are compared by
//! the file executed ((device, inode), see [`crate::identity`]); a process
//! without one is unknown and matches no entry.

use std::collections::HashSet;

use crate::{
    attribution::Process,
    config::{Action, Config, Entry, Unknown},
    identity::FileId,
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

/// A list prepared for lookups: executables in a hash set (a policy may
/// list thousands), command prefixes in order. Entries that named no file
/// at load are left out: they match nothing.
#[derive(Clone, Debug, Default)]
struct List {
    exes: HashSet<FileId>,
    commands: Vec<Entry>,
}

impl List {
    fn new(entries: &[Entry]) -> List {
        let mut list = List::default();
        for e in entries {
            match (e, e.target()) {
                (Entry::Exe { .. }, Some(t)) => {
                    list.exes.insert(t.id);
                    list.exes.extend(t.previous.iter().copied());
                }
                (Entry::Command { .. }, Some(_)) => list.commands.push(e.clone()),
                (_, None) => {}
            }
        }
        list
    }

    fn contains(&self, p: &Process) -> bool {
        p.exe_id.is_some_and(|id| self.exes.contains(&id))
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
        // Without an executable a process is unknown, whatever its name.
        let Some(p) = process.filter(|p| p.exe_id.is_some()) else {
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

/// Does `entry` name process `p`? Only by the file `p` executes and, for
/// a command prefix, argv after argv[0] as recorded at exec; an entry that
/// named no file at load matches nothing.
pub fn matches(entry: &Entry, p: &Process) -> bool {
    let (Some(id), Some(target)) = (p.exe_id, entry.target()) else {
        return false;
    };
    if !target.names(id) {
        return false;
    }
    match entry {
        Entry::Exe { .. } => true,
        Entry::Command { words, .. } => {
            let rest = &words[1..];
            // argv that is not UTF-8 was decoded with U+FFFD in place of
            // the bytes: such a word equals no configured word.
            rest.is_empty()
                || (p.args.len() > rest.len()
                    && rest
                        .iter()
                        .zip(&p.args[1..])
                        .all(|(w, a)| w == a && !a.contains(char::REPLACEMENT_CHARACTER)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(exe: &str, args: &[&str]) -> Process {
        Process::example(exe, args)
    }

    /// A configuration resolved against the in-memory Debian-like files
    /// of the config tests (no host state).
    fn config(white: &[&str], black: &[&str]) -> Config {
        config_in(&crate::config::tests::debian(), white, black)
    }

    fn config_in(files: &impl crate::config::Resolver, white: &[&str], black: &[&str]) -> Config {
        let mut c = Config {
            whitelist: white.iter().map(|e| Entry::parse(e).unwrap()).collect(),
            blacklist: black.iter().map(|e| Entry::parse(e).unwrap()).collect(),
            ..Config::default()
        };
        c.resolve(files);
        c
    }

    fn entry(text: &str) -> Entry {
        let mut e = Entry::parse(text).unwrap();
        e.resolve(&crate::config::tests::debian()).unwrap();
        e
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
    fn command_prefix_matches_executable_and_following_words() {
        let e = entry("nc 192.168.58.1");
        assert!(matches(
            &e,
            &proc("/usr/bin/nc.openbsd", &["nc", "192.168.58.1", "631"])
        ));
        // argv[0] is whatever the caller chose: not compared.
        assert!(matches(
            &e,
            &proc("/usr/bin/nc.openbsd", &["anything", "192.168.58.1"])
        ));
        assert!(!matches(
            &e,
            &proc("/usr/bin/nc.openbsd", &["nc", "192.168.58.2"])
        ));
        assert!(!matches(&e, &proc("/usr/bin/nc.openbsd", &["nc"])));
        assert!(!matches(&e, &proc("/usr/bin/nc.openbsd", &[])));
        let py = entry("python3 -c");
        assert!(matches(
            &py,
            &proc("/usr/bin/python3.11", &["python3", "-c", "print(1)"])
        ));
        assert!(!matches(
            &py,
            &proc("/usr/bin/python3.11", &["python3", "script.py"])
        ));
        // A one-word entry needs only the executable.
        assert!(matches(&entry("curl"), &proc("/usr/bin/curl", &[])));
    }

    #[test]
    fn forged_argv0_does_not_make_another_program_match() {
        // `exec -a nc python3 198.51.100.2`: python running a script named
        // like the address.
        let e = entry("nc 198.51.100.2");
        let forged = proc("/usr/bin/python3.11", &["nc", "198.51.100.2"]);
        assert!(!matches(&e, &forged));
        let p = Policy::new(Mode::Whitelist, &config(&["nc 198.51.100.2"], &[]));
        assert_eq!(p.decide(Some(&forged)).reason, Reason::NotInWhitelist);
        // argv[0] naming the path of the listed program does not help either.
        let abs = entry("/usr/bin/python3.11 -c");
        assert!(matches(
            &abs,
            &proc("/usr/bin/python3.11", &["python3", "-c"])
        ));
        assert!(!matches(
            &abs,
            &proc("/other", &["/usr/bin/python3.11", "-c"])
        ));
    }

    #[test]
    fn argv_that_was_not_utf8_matches_no_word() {
        // "\xff" at exec is decoded as U+FFFD; an entry spelling U+FFFD
        // must not match it.
        let e = entry("curl \u{fffd}");
        assert!(!matches(&e, &proc("/usr/bin/curl", &["curl", "\u{fffd}"])));
        assert!(matches(
            &entry("curl -x"),
            &proc("/usr/bin/curl", &["curl", "-x", "\u{fffd}"])
        ));
    }

    #[test]
    fn process_without_executable_is_unknown_and_never_whitelisted() {
        let mut p = proc("/usr/bin/curl", &["curl"]);
        p.exe_id = None;
        p.comm = "curl".into();
        for e in ["curl", "/usr/bin/curl", "curl -sS"] {
            assert!(!matches(&entry(e), &p), "{e}");
        }
        let w = Policy::new(Mode::Whitelist, &config(&["curl", "/usr/bin/curl"], &[]));
        assert_eq!(
            w.decide(Some(&p)),
            Decision {
                verdict: Verdict::Block(Action::Drop),
                reason: Reason::Unknown
            }
        );
        // Blacklist mode: unknown follows `unknown` (accept by default).
        let b = Policy::new(Mode::Blacklist, &config(&[], &["/usr/bin/curl"]));
        assert_eq!(b.decide(Some(&p)).reason, Reason::Unknown);
    }

    #[test]
    fn unresolved_entry_matches_nothing() {
        // /usr/sbin/sshd is not in the test file system.
        let c = config(&["/usr/sbin/sshd", "sshd -D"], &[]);
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        let sshd = proc("/usr/sbin/sshd", &["sshd", "-D"]);
        let d = Policy::new(Mode::Whitelist, &c).decide(Some(&sshd));
        assert_eq!(d.reason, Reason::NotInWhitelist);
    }

    #[test]
    fn script_is_its_interpreter_with_the_script_in_the_command() {
        // What the exec hook records for `./send.py` with #!/usr/bin/python3.
        let script = proc(
            "/usr/bin/python3.11",
            &["/usr/bin/python3", "./send.py", "x"],
        );
        let b = Policy::new(Mode::Blacklist, &config(&[], &["/usr/bin/python3"]));
        assert_eq!(b.decide(Some(&script)).reason, Reason::InBlacklist);
        assert!(matches(&entry("python3 ./send.py"), &script));
        assert!(!matches(&entry("python3 ./other.py"), &script));
    }

    #[test]
    fn large_lists_match_exactly() {
        let many: Vec<&'static str> = (0..1001)
            .map(|i| &*Box::leak(format!("/opt/x/prog{i}").into_boxed_str()))
            .collect();
        let files = crate::config::tests::Files {
            links: vec![],
            files: many.clone(),
            path: vec![],
        };
        let p = Policy::new(Mode::Blacklist, &config_in(&files, &[], &many[..1000]));
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
}
