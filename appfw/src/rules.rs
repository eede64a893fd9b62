//! `[[rule]]` tables: who may reach what.
//!
//! ```toml
//! [[rule]]
//! exe = "/usr/bin/curl"   # or command = "nc 192.168.58.1" (as the lists)
//! host = "*.debian.org"   # a name; "*." stands for one or more labels
//! port = 443              # or "1024-65535"
//! proto = "tcp"           # "tcp", "udp", "icmp"
//! user = "www-data"       # a name or a uid
//! addr = "10.0.0.0/8"     # an address or a CIDR, IPv4 or IPv6
//! action = "accept"       # "accept", "drop", "reject"
//! name = "curl to debian" # optional: reports name the rule by it
//! ```
//!
//! Parsing ([`parse`]) touches nothing on the host; [`Rule::resolve`]
//! finds the executable and the user's uid (at start and every reload).
//! Matching ([`Rule::program_matches`], [`Rule::flow_matches`]) allocates
//! nothing: it runs on the packet path.

use std::{fmt, net::IpAddr, sync::Arc};

use appfw_common::{
    flow::{PROTO_TCP, PROTO_UDP},
    FlowKey,
};
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::{
    attribution::Process,
    config::{Action, ConfigError, Entry, Resolver},
    packet::{PROTO_ICMP, PROTO_ICMPV6},
    policy::{self, Verdict},
};

/// One `[[rule]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    name: Option<Spanned<String>>,
    exe: Option<Spanned<String>>,
    command: Option<Spanned<String>>,
    user: Option<Spanned<toml::Value>>,
    host: Option<Spanned<String>>,
    port: Option<Spanned<toml::Value>>,
    proto: Option<Spanned<String>>,
    addr: Option<Spanned<String>>,
    action: Option<Spanned<String>>,
}

/// A user matcher: the uid, found when the configuration is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// As written: a name or a number.
    pub written: String,
    /// `None` until resolved, and for a name no account has: such a rule
    /// matches nothing.
    pub uid: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    /// ICMP and ICMPv6.
    Icmp,
}

impl Proto {
    fn matches(self, proto: u8) -> bool {
        match self {
            Proto::Tcp => proto == PROTO_TCP,
            Proto::Udp => proto == PROTO_UDP,
            Proto::Icmp => proto == PROTO_ICMP || proto == PROTO_ICMPV6,
        }
    }
}

/// A host name, or `*.suffix` for every name with one or more labels in
/// front of the suffix. Stored in lower case, without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// For `*.debian.org`: ".debian.org"; for a name: the name.
    pattern: String,
    wildcard: bool,
}

impl Host {
    fn parse(text: &str) -> Result<Host, String> {
        let t = text.trim_end_matches('.');
        let (wildcard, name) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "{text:?} is not a host name; expected a name such as \"deb.debian.org\", or \"*.debian.org\" for every name under debian.org"
            ));
        }
        let name = name.to_ascii_lowercase();
        Ok(if wildcard {
            Host {
                pattern: format!(".{name}"),
                wildcard,
            }
        } else {
            Host {
                pattern: name,
                wildcard,
            }
        })
    }

    /// Whether `name` (any case, trailing dot or not) is this host.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        if self.wildcard {
            name.len() > self.pattern.len()
                && name.is_char_boundary(name.len() - self.pattern.len())
                && name[name.len() - self.pattern.len()..].eq_ignore_ascii_case(&self.pattern)
        } else {
            name.eq_ignore_ascii_case(&self.pattern)
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*{}", self.pattern)
        } else {
            f.write_str(&self.pattern)
        }
    }
}

/// What the packet's flow is, as far as rules look at it.
#[derive(Clone, Copy, Debug)]
pub struct Flow<'a> {
    pub proto: u8,
    pub daddr: IpAddr,
    pub dport: u16,
    /// The owner's uid, when the owner is known.
    pub uid: Option<u32>,
    /// The destination's name, when a DNS answer gave one.
    pub host: Option<&'a str>,
}

impl<'a> Flow<'a> {
    /// The flow of a packet with `key`, sent by an owner of `uid`.
    pub fn of(key: &FlowKey, uid: Option<u32>, host: Option<&'a str>) -> Flow<'a> {
        let (_, remote) = key.endpoints();
        Flow {
            proto: key.proto,
            daddr: remote.ip(),
            dport: remote.port(),
            uid,
            host,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// How reports name it: its `name`, or "#N" (its position, from 1).
    pub label: Arc<str>,
    /// Line of its `[[rule]]` header, for warnings.
    pub line: usize,
    pub program: Option<Entry>,
    pub user: Option<User>,
    pub host: Option<Host>,
    /// Inclusive range.
    pub ports: Option<(u16, u16)>,
    pub proto: Option<Proto>,
    pub addr: Option<IpNet>,
    pub verdict: Verdict,
}

impl Rule {
    /// Whether the rule looks at where a packet goes (so two packets of
    /// one process may get different verdicts from it).
    pub fn has_flow_matchers(&self) -> bool {
        self.host.is_some() || self.ports.is_some() || self.proto.is_some() || self.addr.is_some()
    }

    /// The process half: executable, command and user. A rule with an
    /// executable or command needs a process with a known executable; one
    /// with a user needs a known owner.
    pub fn program_matches(&self, p: Option<&Process>, uid: Option<u32>) -> bool {
        if let Some(entry) = &self.program {
            if !p.is_some_and(|p| policy::matches(entry, p)) {
                return false;
            }
        }
        if let Some(user) = &self.user {
            if user.uid.is_none() || user.uid != uid {
                return false;
            }
        }
        true
    }

    /// The destination half: name, port, protocol and address. A port
    /// range matches only TCP and UDP; a host matcher only a flow whose
    /// destination name is known.
    pub fn flow_matches(&self, f: &Flow) -> bool {
        if let Some(proto) = self.proto {
            if !proto.matches(f.proto) {
                return false;
            }
        }
        if let Some((lo, hi)) = self.ports {
            if !(f.proto == PROTO_TCP || f.proto == PROTO_UDP) || f.dport < lo || f.dport > hi {
                return false;
            }
        }
        if let Some(net) = &self.addr {
            let ip = match f.daddr {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(f.daddr),
                v4 => v4,
            };
            if !net.contains(&ip) {
                return false;
            }
        }
        if let Some(host) = &self.host {
            if !f.host.is_some_and(|h| host.matches(h)) {
                return false;
            }
        }
        true
    }

    /// Finds the executable and the uid the rule names; `Err` says why one
    /// is missing (the rule then matches nothing).
    pub fn resolve(&mut self, files: &impl Resolver) -> Result<(), String> {
        let mut why = Vec::new();
        if let Some(e) = &mut self.program {
            if let Err(w) = e.resolve(files) {
                why.push(format!("names no executable ({w})"));
            }
        }
        if let Some(u) = &mut self.user {
            u.uid = u.written.parse().ok().or_else(|| files.uid_of(&u.written));
            if u.uid.is_none() {
                why.push(format!(
                    "names user {:?}, who has no account here",
                    u.written
                ));
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join(" and "))
        }
    }
}

/// Turns the `[[rule]]` tables of `text` (from `origin`) into rules; each
/// error names the file, the line and the key.
pub(crate) fn parse(raw: Vec<RawRule>, text: &str, origin: &str) -> Result<Vec<Rule>, ConfigError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| parse_one(i, r, text, origin))
        .collect()
}

fn parse_one(i: usize, r: RawRule, text: &str, origin: &str) -> Result<Rule, ConfigError> {
    let invalid = |start: usize, key: &str, message: String| ConfigError::Invalid {
        path: origin.to_owned(),
        line: crate::config::line_of(text, start),
        key: format!("rule.{key}"),
        message,
    };
    // The table's own line: the first key's, or the header above it.
    let first_key = [
        r.name.as_ref().map(|s| s.span().start),
        r.exe.as_ref().map(|s| s.span().start),
        r.command.as_ref().map(|s| s.span().start),
        r.user.as_ref().map(|s| s.span().start),
        r.host.as_ref().map(|s| s.span().start),
        r.port.as_ref().map(|s| s.span().start),
        r.proto.as_ref().map(|s| s.span().start),
        r.addr.as_ref().map(|s| s.span().start),
        r.action.as_ref().map(|s| s.span().start),
    ]
    .into_iter()
    .flatten()
    .min();
    let header = nth_header(text, i);
    let line = crate::config::line_of(text, header.or(first_key).unwrap_or(0));
    let Some(action) = &r.action else {
        return Err(ConfigError::Invalid {
            path: origin.to_owned(),
            line,
            key: "rule.action".into(),
            message: "every rule needs an action: \"accept\", \"drop\" or \"reject\"".into(),
        });
    };
    let verdict = match action.get_ref().as_str() {
        "accept" => Verdict::Accept,
        "drop" => Verdict::Block(Action::Drop),
        "reject" => Verdict::Block(Action::Reject),
        other => {
            return Err(invalid(
                action.span().start,
                "action",
                format!("{other:?} is not an action; expected \"accept\", \"drop\" or \"reject\""),
            ))
        }
    };
    let program = match (&r.exe, &r.command) {
        (Some(_), Some(c)) => {
            return Err(invalid(
                c.span().start,
                "command",
                "a rule names its program by exe or by command, not both".into(),
            ))
        }
        (Some(e), None) => {
            let s = e.get_ref();
            if !s.starts_with('/') || s.split_whitespace().count() != 1 {
                return Err(invalid(
                    e.span().start,
                    "exe",
                    format!("{s:?} is not an absolute path; expected a path such as \"/usr/bin/curl\" (a command with arguments goes in `command`)"),
                ));
            }
            Some(Entry::parse(s).map_err(|m| invalid(e.span().start, "exe", m))?)
        }
        (None, Some(c)) => {
            Some(Entry::parse(c.get_ref()).map_err(|m| invalid(c.span().start, "command", m))?)
        }
        (None, None) => None,
    };
    let user = match &r.user {
        None => None,
        Some(u) => {
            let written = match u.get_ref() {
                toml::Value::Integer(n) if u32::try_from(*n).is_ok() => n.to_string(),
                toml::Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
                other => {
                    return Err(invalid(
                        u.span().start,
                        "user",
                        format!("{other} is not a user; expected a user name such as \"www-data\" or a uid such as 33"),
                    ))
                }
            };
            Some(User { written, uid: None })
        }
    };
    let host = match &r.host {
        None => None,
        Some(h) => Some(Host::parse(h.get_ref()).map_err(|m| invalid(h.span().start, "host", m))?),
    };
    let ports = match &r.port {
        None => None,
        Some(p) => Some(parse_ports(p.get_ref()).map_err(|m| invalid(p.span().start, "port", m))?),
    };
    let proto = match &r.proto {
        None => None,
        Some(p) => Some(match p.get_ref().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "icmp" => Proto::Icmp,
            other => {
                return Err(invalid(
                    p.span().start,
                    "proto",
                    format!("{other:?} is not a protocol; expected \"tcp\", \"udp\" or \"icmp\""),
                ))
            }
        }),
    };
    if let (Some(Proto::Icmp), Some(p)) = (proto, &r.port) {
        return Err(invalid(
            p.span().start,
            "port",
            "ICMP has no ports: remove `port` or choose proto \"tcp\" or \"udp\"".into(),
        ));
    }
    let addr = match &r.addr {
        None => None,
        Some(a) => Some(parse_addr(a.get_ref()).map_err(|m| invalid(a.span().start, "addr", m))?),
    };
    let label: Arc<str> = match &r.name {
        Some(n) if !n.get_ref().trim().is_empty() => {
            crate::escape::escape(n.get_ref().trim()).into()
        }
        Some(n) => {
            return Err(invalid(
                n.span().start,
                "name",
                "an empty name; leave `name` out to have the rule named by its position".into(),
            ))
        }
        None => format!("#{}", i + 1).into(),
    };
    let rule = Rule {
        label,
        line,
        program,
        user,
        host,
        ports,
        proto,
        addr,
        verdict,
    };
    if rule.program.is_none() && rule.user.is_none() && !rule.has_flow_matchers() {
        return Err(ConfigError::Invalid {
            path: origin.to_owned(),
            line,
            key: "rule".into(),
            message: "a rule needs at least one of exe, command, user, host, port, proto, addr (a rule for everything is the mode's default)".into(),
        });
    }
    Ok(rule)
}

/// Offset of the `i`-th `[[rule]]` header (0-based), if written that way.
fn nth_header(text: &str, i: usize) -> Option<usize> {
    let mut offset = 0;
    let mut n = 0;
    for l in text.split_inclusive('\n') {
        let t = l.trim();
        if t.starts_with("[[")
            && t.trim_start_matches('[').trim_start().starts_with("rule")
            && t.trim_start_matches('[').trim_start()["rule".len()..]
                .trim_start()
                .starts_with(']')
        {
            if n == i {
                return Some(offset + (l.len() - l.trim_start().len()));
            }
            n += 1;
        }
        offset += l.len();
    }
    None
}

fn parse_ports(v: &toml::Value) -> Result<(u16, u16), String> {
    let expected = "expected a port such as 443 or a range such as \"1024-65535\"";
    let port = |n: i64| -> Result<u16, String> {
        u16::try_from(n)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{n} is not a port from 1 to 65535; {expected}"))
    };
    match v {
        toml::Value::Integer(n) => port(*n).map(|p| (p, p)),
        toml::Value::String(s) => {
            let one = |t: &str| -> Result<u16, String> {
                t.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{s:?} is not a port or a range; {expected}"))
                    .and_then(port)
            };
            let (lo, hi) = match s.split_once('-') {
                Some((a, b)) => (one(a)?, one(b)?),
                None => {
                    let p = one(s)?;
                    (p, p)
                }
            };
            if lo > hi {
                return Err(format!(
                    "{s:?} is an empty range: the first port must not be above the second"
                ));
            }
            Ok((lo, hi))
        }
        other => Err(format!("{other} is not a port; {expected}")),
    }
}

fn parse_addr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = s.parse().map_err(|_| {
        format!("{s:?} is not an address or a network; expected an address such as \"198.51.100.2\" or \"2001:db8::2\", or a CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\"")
    })?;
    if net.trunc() != net {
        return Err(format!(
            "{s:?} has host bits set after the prefix length; did you mean \"{}\"?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// The uid of user `name` in the system's account database (NSS, as
/// `id -u NAME` would answer).
pub fn system_uid_of(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: an all-zero passwd is a valid value for getpwnam_r to fill.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    loop {
        // SAFETY: every pointer is valid for the call; buf's length is passed.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut out,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        return (rc == 0 && !out.is_null()).then_some(pwd.pw_uid);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::parse_str;

    fn rules(text: &str) -> Vec<Rule> {
        parse_str(text, "t.toml").unwrap().rules
    }

    fn err(text: &str) -> String {
        parse_str(text, "t.toml").unwrap_err().to_string()
    }

    /// A flow of uid 0 to `daddr`:`dport` without a name.
    pub(crate) fn flow(proto: u8, daddr: &str, dport: u16) -> Flow<'static> {
        Flow {
            proto,
            daddr: daddr.parse().unwrap(),
            dport,
            uid: Some(0),
            host: None,
        }
    }

    #[test]
    fn every_key_parses() {
        let r = rules(
            "[[rule]]\nname = \"web\"\nexe = \"/usr/bin/curl\"\nhost = \"*.Debian.org.\"\nport = \"1024-65535\"\nproto = \"tcp\"\naction = \"accept\"\n\n[[rule]]\nuser = 33\naddr = \"10.0.0.0/8\"\naction = \"reject\"\n",
        );
        assert_eq!(r.len(), 2);
        assert_eq!(&*r[0].label, "web");
        assert_eq!(r[0].ports, Some((1024, 65535)));
        assert_eq!(r[0].proto, Some(Proto::Tcp));
        assert_eq!(r[0].host.as_ref().unwrap().to_string(), "*.debian.org");
        assert_eq!(r[0].verdict, Verdict::Accept);
        assert_eq!(r[0].line, 1);
        assert_eq!(&*r[1].label, "#2");
        assert_eq!(r[1].line, 9);
        assert_eq!(r[1].user.as_ref().unwrap().written, "33");
        assert_eq!(r[1].verdict, Verdict::Block(Action::Reject));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = err("[[rule]]\nexe = \"/usr/bin/curl\"\nport = 70000\naction = \"accept\"\n");
        assert!(
            e.starts_with("t.toml:3: key `rule.port`: 70000 is not a port"),
            "{e}"
        );
        let e = err(
            "[[rule]]\naction = \"accept\"\n\n[[rule]]\naddr = \"10.0.0.1/8\"\naction = \"drop\"\n",
        );
        assert!(
            e.starts_with("t.toml:1: key `rule`: a rule needs at least one"),
            "{e}"
        );
        let e = err("[[rule]]\naddr = \"10.0.0.1/8\"\naction = \"drop\"\n");
        assert!(
            e.contains("t.toml:2: key `rule.addr`") && e.contains("\"10.0.0.0/8\""),
            "{e}"
        );
        let e = err("[[rule]]\nport = 80\n");
        assert!(
            e.starts_with("t.toml:1: key `rule.action`: every rule needs an action"),
            "{e}"
        );
        let e = err("[[rule]]\nport = 80\naction = \"allow\"\n");
        assert!(
            e.starts_with("t.toml:3: key `rule.action`: \"allow\" is not an action"),
            "{e}"
        );
        let e = err("[[rule]]\nproto = \"sctp\"\naction = \"drop\"\n");
        assert!(e.starts_with("t.toml:2: key `rule.proto`"), "{e}");
        let e = err("[[rule]]\nhost = \"bad name\"\naction = \"drop\"\n");
        assert!(e.starts_with("t.toml:2: key `rule.host`"), "{e}");
        let e = err("[[rule]]\nport = \"90-80\"\naction = \"drop\"\n");
        assert!(e.contains("empty range"), "{e}");
        let e = err("[[rule]]\nproto = \"icmp\"\nport = 7\naction = \"drop\"\n");
        assert!(
            e.starts_with("t.toml:3: key `rule.port`: ICMP has no ports"),
            "{e}"
        );
        let e = err("[[rule]]\nexe = \"curl -s\"\naction = \"drop\"\n");
        assert!(e.starts_with("t.toml:2: key `rule.exe`"), "{e}");
        let e = err("[[rule]]\nuser = -1\naction = \"drop\"\n");
        assert!(e.starts_with("t.toml:2: key `rule.user`"), "{e}");
        // Unknown keys are refused by the TOML reader, at the key.
        let e = err("[[rule]]\nports = 80\naction = \"drop\"\n");
        assert!(e.starts_with("t.toml:2: key `rule.ports`"), "{e}");
    }

    #[test]
    fn ports_and_protocols() {
        let r = &rules("[[rule]]\nport = \"8000-8080\"\naction = \"drop\"\n")[0];
        assert!(r.flow_matches(&flow(PROTO_TCP, "198.51.100.2", 8080)));
        assert!(r.flow_matches(&flow(PROTO_UDP, "198.51.100.2", 8000)));
        assert!(!r.flow_matches(&flow(PROTO_TCP, "198.51.100.2", 8081)));
        assert!(!r.flow_matches(&flow(PROTO_ICMP, "198.51.100.2", 8000)));
        let icmp = &rules("[[rule]]\nproto = \"icmp\"\naction = \"drop\"\n")[0];
        assert!(icmp.flow_matches(&flow(PROTO_ICMP, "198.51.100.2", 0)));
        assert!(icmp.flow_matches(&flow(PROTO_ICMPV6, "2001:db8::2", 0)));
        assert!(!icmp.flow_matches(&flow(PROTO_UDP, "2001:db8::2", 0)));
    }

    #[test]
    fn addresses_and_networks_v4_and_v6() {
        let net = &rules("[[rule]]\naddr = \"198.51.100.0/25\"\naction = \"drop\"\n")[0];
        assert!(net.flow_matches(&flow(PROTO_TCP, "198.51.100.127", 1)));
        assert!(!net.flow_matches(&flow(PROTO_TCP, "198.51.100.128", 1)));
        assert!(
            net.flow_matches(&flow(PROTO_TCP, "::ffff:198.51.100.2", 1)),
            "mapped v4"
        );
        assert!(!net.flow_matches(&flow(PROTO_TCP, "2001:db8::2", 1)));
        let v6 = &rules("[[rule]]\naddr = \"2001:db8:1::/48\"\naction = \"drop\"\n")[0];
        assert!(v6.flow_matches(&flow(PROTO_UDP, "2001:db8:1::9", 1)));
        assert!(!v6.flow_matches(&flow(PROTO_UDP, "2001:db8:2::9", 1)));
        let one = &rules("[[rule]]\naddr = \"2001:db8::2\"\naction = \"drop\"\n")[0];
        assert!(one.flow_matches(&flow(PROTO_UDP, "2001:db8::2", 1)));
        assert!(!one.flow_matches(&flow(PROTO_UDP, "2001:db8::3", 1)));
    }

    #[test]
    fn host_names_and_wildcards() {
        let h = Host::parse("*.debian.org").unwrap();
        assert!(h.matches("deb.debian.org"));
        assert!(h.matches("a.b.DEBIAN.org."));
        assert!(!h.matches("debian.org"), "one or more leading labels");
        assert!(!h.matches("xdebian.org"));
        assert!(!h.matches("deb.debian.org.evil"));
        let exact = Host::parse("test.example").unwrap();
        assert!(exact.matches("Test.Example"));
        assert!(!exact.matches("a.test.example"));
        let r = &rules("[[rule]]\nhost = \"test.example\"\naction = \"accept\"\n")[0];
        let mut f = flow(PROTO_TCP, "198.51.100.2", 80);
        assert!(!r.flow_matches(&f), "no name known: no match");
        f.host = Some("test.example");
        assert!(r.flow_matches(&f));
        // Multi-byte names do not panic the suffix comparison.
        assert!(!h.matches("é.debian.or"));
    }

    #[test]
    fn users_by_number_and_by_name() {
        let mut r = rules("[[rule]]\nuser = \"root\"\naction = \"drop\"\n\n[[rule]]\nuser = 65534\naction = \"drop\"\n\n[[rule]]\nuser = \"no-such-user-appfw\"\naction = \"drop\"\n");
        let files = crate::config::tests::debian();
        assert!(r[0].resolve(&files).is_ok());
        assert_eq!(r[0].user.as_ref().unwrap().uid, Some(0));
        assert!(r[1].resolve(&files).is_ok());
        assert!(r[1].program_matches(None, Some(65534)));
        assert!(!r[1].program_matches(None, Some(0)));
        assert!(
            !r[1].program_matches(None, None),
            "an unknown owner has no uid"
        );
        let why = r[2].resolve(&files).unwrap_err();
        assert!(why.contains("no-such-user-appfw"), "{why}");
        assert!(!r[2].program_matches(None, None));
    }

    #[test]
    fn system_users_resolve_through_nss() {
        assert_eq!(system_uid_of("root"), Some(0));
        assert_eq!(system_uid_of("no-such-user-appfw"), None);
    }
}
