//! The decision: (mode, rules, lists, owner, flow) -> accept or block, and
//! why.
//!
//! A pure function of its inputs, allocation-free, so it can sit on the
//! packet path and be tested without a kernel. Programs are compared by
//! the file executed ((device, inode), see [`crate::identity`]); a process
//! without one is unknown and matches no entry. `[[rule]]`s
//! ([`crate::rules`]) come first, in file order; the first that matches
//! decides. In monitor mode everything is accepted and the decision says
//! what the rule would have done.

use std::{collections::HashSet, sync::Arc};

use crate::{
    attribution::Process,
    config::{Action, Config, Entry, Unknown},
    identity::FileId,
    rules::{Flow, Rule},
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
    /// A `[[rule]]` decided (see [`Decision::rule`]).
    Rule,
}

/// Whether a decision holds for every packet of the process, or may differ
/// for another destination of it: a rule that looks at the destination
/// could apply to this process. The queue caches a `Process` verdict per
/// process, a `Flow` one only per socket whose packets all go to one
/// destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Process,
    Flow,
}

/// The rule that matched, and its verdict (in monitor mode: the verdict it
/// would have given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleHit {
    /// Index into the policy's rules (see [`Policy::rule_label`]).
    pub index: u16,
    pub verdict: Verdict,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
    pub scope: Scope,
    pub rule: Option<RuleHit>,
}

impl Decision {
    fn new(verdict: Verdict, reason: Reason, scope: Scope) -> Decision {
        Decision {
            verdict,
            reason,
            scope,
            rule: None,
        }
    }
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
    rules: Vec<Rule>,
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
            // Rules past u16::MAX are unreachable in practice; the index
            // must fit the decision.
            rules: config
                .rules
                .iter()
                .take(u16::MAX as usize)
                .cloned()
                .collect(),
        }
    }

    /// How reports name rule `index`: its `name`, or "#N".
    pub fn rule_label(&self, index: u16) -> Option<&Arc<str>> {
        self.rules.get(index as usize).map(|r| &r.label)
    }

    /// A packet appfw cannot tie to its socket because it was overrun:
    /// blocked (dropped) unless appfw only monitors.
    pub fn overloaded(&self) -> Decision {
        let verdict = match self.mode {
            Mode::Monitor => Verdict::Accept,
            _ => Verdict::Block(Action::Drop),
        };
        Decision::new(verdict, Reason::Unknown, Scope::Flow)
    }

    /// Judges a packet of `flow` sent by `process` (`None`: no owner).
    pub fn decide(&self, process: Option<&Process>, flow: &Flow) -> Decision {
        let (hit, scope) = self.first_rule(process, flow);
        if let Some(hit) = hit {
            let verdict = match self.mode {
                Mode::Monitor => Verdict::Accept,
                _ => hit.verdict,
            };
            let reason = match self.mode {
                Mode::Monitor => Reason::Monitor,
                _ => Reason::Rule,
            };
            return Decision {
                verdict,
                reason,
                scope,
                rule: Some(hit),
            };
        }
        let block = Verdict::Block(self.action);
        // Without an executable a process is unknown, whatever its name.
        let Some(p) = process.filter(|p| p.exe_id.is_some()) else {
            let verdict = match (self.mode, self.unknown) {
                (Mode::Monitor, _) | (_, Unknown::Accept) => Verdict::Accept,
                (_, Unknown::Drop) => block,
            };
            return Decision::new(verdict, Reason::Unknown, scope);
        };
        let (verdict, reason) = match self.mode {
            Mode::Monitor => (Verdict::Accept, Reason::Monitor),
            Mode::Whitelist if self.whitelist.contains(p) => (Verdict::Accept, Reason::InWhitelist),
            Mode::Whitelist => (block, Reason::NotInWhitelist),
            Mode::Blacklist if self.blacklist.contains(p) => (block, Reason::InBlacklist),
            Mode::Blacklist => (Verdict::Accept, Reason::NotInBlacklist),
        };
        Decision::new(verdict, reason, scope)
    }

    /// The first rule matching the packet, and the scope of the decision:
    /// `Flow` as soon as a rule that looks at destinations applies to this
    /// process, matched or not, up to the deciding one.
    fn first_rule(&self, process: Option<&Process>, flow: &Flow) -> (Option<RuleHit>, Scope) {
        let mut scope = Scope::Process;
        for (i, r) in self.rules.iter().enumerate() {
            if r.has_flow_matchers() {
                // Once the scope is known, the cheap destination test
                // goes first.
                if scope == Scope::Flow {
                    if !r.flow_matches(flow) || !r.program_matches(process, flow.uid) {
                        continue;
                    }
                } else {
                    if !r.program_matches(process, flow.uid) {
                        continue;
                    }
                    scope = Scope::Flow;
                    if !r.flow_matches(flow) {
                        continue;
                    }
                }
            } else if !r.program_matches(process, flow.uid) {
                continue;
            }
            let hit = RuleHit {
                index: i as u16,
                verdict: r.verdict,
            };
            return (Some(hit), scope);
        }
        (None, scope)
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

    /// A TCP flow to the test server; these tests have no rules.
    fn flow() -> Flow<'static> {
        Flow {
            proto: appfw_common::flow::PROTO_TCP,
            daddr: "198.51.100.2".parse().unwrap(),
            dport: 80,
            uid: Some(0),
            host: None,
        }
    }

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
            p.decide(Some(&curl), &flow()),
            Decision::new(
                Verdict::Block(Action::Drop),
                Reason::InBlacklist,
                Scope::Process
            )
        );
        assert_eq!(p.decide(Some(&py), &flow()).verdict, Verdict::Accept);
    }

    #[test]
    fn whitelist_accepts_listed_and_blocks_the_rest() {
        let p = Policy::new(Mode::Whitelist, &config(&["/usr/bin/python3.11"], &[]));
        assert_eq!(
            p.decide(Some(&proc("/usr/bin/python3.11", &["python3"])), &flow())
                .reason,
            Reason::InWhitelist
        );
        let d = p.decide(Some(&proc("/usr/bin/curl", &["curl"])), &flow());
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Block(Action::Drop), Reason::NotInWhitelist)
        );
    }

    #[test]
    fn unknown_owner_defaults_depend_on_mode() {
        let c = config(&[], &[]);
        assert_eq!(
            Policy::new(Mode::Whitelist, &c)
                .decide(None, &flow())
                .verdict,
            Verdict::Block(Action::Drop)
        );
        assert_eq!(
            Policy::new(Mode::Blacklist, &c)
                .decide(None, &flow())
                .verdict,
            Verdict::Accept
        );
        assert_eq!(
            Policy::new(Mode::Monitor, &c).decide(None, &flow()).verdict,
            Verdict::Accept
        );
        let mut c2 = c.clone();
        c2.unknown = Some(Unknown::Drop);
        assert_eq!(
            Policy::new(Mode::Blacklist, &c2)
                .decide(None, &flow())
                .reason,
            Reason::Unknown
        );
        assert_eq!(
            Policy::new(Mode::Blacklist, &c2)
                .decide(None, &flow())
                .verdict,
            Verdict::Block(Action::Drop)
        );
        c2.unknown = Some(Unknown::Accept);
        assert_eq!(
            Policy::new(Mode::Whitelist, &c2)
                .decide(None, &flow())
                .verdict,
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
        assert_eq!(
            p.decide(Some(&forged), &flow()).reason,
            Reason::NotInWhitelist
        );
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
            w.decide(Some(&p), &flow()),
            Decision::new(
                Verdict::Block(Action::Drop),
                Reason::Unknown,
                Scope::Process
            )
        );
        // Blacklist mode: unknown follows `unknown` (accept by default).
        let b = Policy::new(Mode::Blacklist, &config(&[], &["/usr/bin/curl"]));
        assert_eq!(b.decide(Some(&p), &flow()).reason, Reason::Unknown);
    }

    #[test]
    fn unresolved_entry_matches_nothing() {
        // /usr/sbin/sshd is not in the test file system.
        let c = config(&["/usr/sbin/sshd", "sshd -D"], &[]);
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        let sshd = proc("/usr/sbin/sshd", &["sshd", "-D"]);
        let d = Policy::new(Mode::Whitelist, &c).decide(Some(&sshd), &flow());
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
        assert_eq!(b.decide(Some(&script), &flow()).reason, Reason::InBlacklist);
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
            p.decide(Some(&proc("/opt/x/prog999", &["prog999"])), &flow())
                .reason,
            Reason::InBlacklist
        );
        assert_eq!(
            p.decide(Some(&proc("/opt/x/prog1000", &["prog1000"])), &flow())
                .reason,
            Reason::NotInBlacklist
        );
    }

    #[test]
    fn reject_action_is_carried() {
        let mut c = config(&[], &["/usr/bin/curl"]);
        c.action = Action::Reject;
        let d = Policy::new(Mode::Blacklist, &c)
            .decide(Some(&proc("/usr/bin/curl", &["curl"])), &flow());
        assert_eq!(d.verdict, Verdict::Block(Action::Reject));
    }

    /// A configuration with `rules` (TOML) and lists, resolved against the
    /// in-memory files.
    fn with_rules(rules: &str, white: &[&str], black: &[&str]) -> Config {
        let mut c = crate::config::parse_str(rules, "t.toml").unwrap();
        c.whitelist = white.iter().map(|e| Entry::parse(e).unwrap()).collect();
        c.blacklist = black.iter().map(|e| Entry::parse(e).unwrap()).collect();
        c.resolve(&crate::config::tests::debian());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        c
    }

    use crate::rules::tests::flow as to;

    const CURL_RULES: &str = "[[rule]]\nexe = \"/usr/bin/curl\"\nport = 8080\naction = \"accept\"\n\n[[rule]]\nname = \"no curl\"\nexe = \"/usr/bin/curl\"\naction = \"reject\"\n";

    #[test]
    fn first_matching_rule_wins_before_the_lists() {
        use appfw_common::flow::{PROTO_TCP, PROTO_UDP};
        // curl is whitelisted, yet the rules decide first.
        let p = Policy::new(
            Mode::Whitelist,
            &with_rules(CURL_RULES, &["/usr/bin/curl"], &[]),
        );
        let curl = proc("/usr/bin/curl", &["curl"]);
        let d = p.decide(Some(&curl), &to(PROTO_TCP, "198.51.100.2", 8080));
        assert_eq!(
            (d.verdict, d.reason, d.scope),
            (Verdict::Accept, Reason::Rule, Scope::Flow)
        );
        assert_eq!(d.rule.map(|h| h.index), Some(0));
        assert_eq!(p.rule_label(0).map(|l| &**l), Some("#1"));
        let d = p.decide(Some(&curl), &to(PROTO_TCP, "198.51.100.2", 80));
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Block(Action::Reject), Reason::Rule)
        );
        assert_eq!(
            p.rule_label(d.rule.unwrap().index).map(|l| &**l),
            Some("no curl")
        );
        // UDP to 8080 is a port match too (no proto given).
        assert_eq!(
            p.decide(Some(&curl), &to(PROTO_UDP, "198.51.100.2", 8080))
                .verdict,
            Verdict::Accept
        );
        // Other programs fall through to the lists.
        let py = proc("/usr/bin/python3.11", &["python3"]);
        let d = p.decide(Some(&py), &to(PROTO_TCP, "198.51.100.2", 8080));
        assert_eq!(
            (d.reason, d.rule, d.scope),
            (Reason::NotInWhitelist, None, Scope::Process)
        );
    }

    #[test]
    fn scope_is_flow_only_where_a_destination_rule_applies() {
        use appfw_common::flow::PROTO_TCP;
        let rules = "[[rule]]\nexe = \"/usr/bin/python3\"\naction = \"drop\"\n\n[[rule]]\naddr = \"2001:db8::/32\"\naction = \"reject\"\n";
        let p = Policy::new(Mode::Blacklist, &with_rules(rules, &[], &[]));
        // python3 is decided by a rule without destination: one verdict
        // for all its packets.
        let d = p.decide(
            Some(&proc("/usr/bin/python3.11", &["python3"])),
            &to(PROTO_TCP, "2001:db8::2", 1),
        );
        assert_eq!(
            (d.verdict, d.scope),
            (Verdict::Block(Action::Drop), Scope::Process)
        );
        // curl could meet the address rule on another destination.
        let curl = proc("/usr/bin/curl", &["curl"]);
        let d = p.decide(Some(&curl), &to(PROTO_TCP, "198.51.100.2", 1));
        assert_eq!(
            (d.verdict, d.reason, d.scope),
            (Verdict::Accept, Reason::NotInBlacklist, Scope::Flow)
        );
        let d = p.decide(Some(&curl), &to(PROTO_TCP, "2001:db8::2", 1));
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Block(Action::Reject), Reason::Rule)
        );
        // A rule for another program leaves this one's scope alone.
        let p = Policy::new(Mode::Blacklist, &with_rules(CURL_RULES, &[], &[]));
        let d = p.decide(
            Some(&proc("/usr/bin/python3.11", &["python3"])),
            &to(PROTO_TCP, "198.51.100.2", 1),
        );
        assert_eq!(d.scope, Scope::Process);
    }

    #[test]
    fn user_rules_need_the_owner_uid() {
        use appfw_common::flow::PROTO_TCP;
        let rules = "[[rule]]\nuser = \"nobody\"\naction = \"drop\"\n";
        let p = Policy::new(Mode::Blacklist, &with_rules(rules, &[], &[]));
        let py = proc("/usr/bin/python3.11", &["python3"]);
        let mut f = to(PROTO_TCP, "198.51.100.2", 1);
        assert_eq!(p.decide(Some(&py), &f).reason, Reason::NotInBlacklist);
        f.uid = Some(65534);
        let d = p.decide(Some(&py), &f);
        assert_eq!(
            (d.verdict, d.reason, d.scope),
            (Verdict::Block(Action::Drop), Reason::Rule, Scope::Process)
        );
        // An owner without an executable still has its uid.
        let mut anon = py.clone();
        anon.exe_id = None;
        assert_eq!(p.decide(Some(&anon), &f).reason, Reason::Rule);
    }

    #[test]
    fn destination_rules_apply_to_unknown_owners_program_rules_do_not() {
        use appfw_common::flow::PROTO_TCP;
        let rules = "[[rule]]\nexe = \"/usr/bin/curl\"\naction = \"accept\"\n\n[[rule]]\naddr = \"198.51.100.0/24\"\nport = 53\naction = \"accept\"\n";
        let p = Policy::new(Mode::Whitelist, &with_rules(rules, &[], &[]));
        let mut f = to(PROTO_TCP, "198.51.100.2", 53);
        f.uid = None;
        let d = p.decide(None, &f);
        assert_eq!(
            (d.verdict, d.reason, d.rule.map(|h| h.index)),
            (Verdict::Accept, Reason::Rule, Some(1))
        );
        f.dport = 80;
        assert_eq!(p.decide(None, &f).reason, Reason::Unknown);
    }

    #[test]
    fn monitor_accepts_and_says_what_the_rule_would_do() {
        use appfw_common::flow::PROTO_TCP;
        let p = Policy::new(Mode::Monitor, &with_rules(CURL_RULES, &[], &[]));
        let curl = proc("/usr/bin/curl", &["curl"]);
        let d = p.decide(Some(&curl), &to(PROTO_TCP, "198.51.100.2", 80));
        assert_eq!((d.verdict, d.reason), (Verdict::Accept, Reason::Monitor));
        assert_eq!(
            d.rule,
            Some(RuleHit {
                index: 1,
                verdict: Verdict::Block(Action::Reject)
            })
        );
        let d = p.decide(
            Some(&proc("/usr/bin/python3.11", &[])),
            &to(PROTO_TCP, "198.51.100.2", 80),
        );
        assert_eq!(
            (d.verdict, d.reason, d.rule),
            (Verdict::Accept, Reason::Monitor, None)
        );
    }

    #[test]
    fn host_rules_match_the_name_of_the_destination() {
        use appfw_common::flow::PROTO_TCP;
        let rules = "[[rule]]\nexe = \"/usr/bin/curl\"\nhost = \"*.debian.org\"\nport = 443\nproto = \"tcp\"\naction = \"accept\"\n";
        let p = Policy::new(Mode::Whitelist, &with_rules(rules, &[], &[]));
        let curl = proc("/usr/bin/curl", &["curl"]);
        let mut f = to(PROTO_TCP, "198.51.100.2", 443);
        assert_eq!(
            p.decide(Some(&curl), &f).reason,
            Reason::NotInWhitelist,
            "no name known"
        );
        f.host = Some("deb.debian.org");
        assert_eq!(p.decide(Some(&curl), &f).reason, Reason::Rule);
        f.host = Some("deb.debian.org.example");
        assert_eq!(p.decide(Some(&curl), &f).reason, Reason::NotInWhitelist);
    }
}
