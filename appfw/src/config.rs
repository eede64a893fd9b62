//! The configuration file (TOML).
//!
//! ```toml
//! [global]
//! queue-num = 0
//! whitelist = ["/usr/sbin/sshd", "nc 198.51.100.2"]
//! blacklist = ["/usr/bin/wget"]
//! action = "drop"      # or "reject"
//! unknown = "accept"   # or "drop"; default: drop in whitelist mode
//! fail = "open"        # or "closed"
//! kernel-verdicts = true  # false: every new flow goes through the queue
//! ```
//!
//! Parsing is split from I/O ([`parse_str`]) so tests feed strings. Every
//! error names the file, the line and the key, and says what is expected.
//! Entries name files: [`Config::resolve`] (run by [`load_file`], so at
//! start and at every reload) finds the (device, inode) each one names; the
//! policy compares those, never paths.

use std::{
    fmt, fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use thiserror::Error;
use toml::{
    de::{DeTable, DeValue},
    Spanned,
};

use crate::{
    cli::DEFAULT_CONFIG,
    identity::FileId,
    rules::{RawRule, Rule},
};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("configuration file {path} does not exist (given with -c/--config, or it was the running configuration's file); create it or point -c at another file")]
    NotFound { path: String },
    #[error("reading configuration file {path} failed: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}:{line}: key `{key}`: {message}")]
    Invalid {
        path: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("refusing configuration file {path}: it is {why}, so others could change the firewall. Fix: chown root:root {path} && chmod go-w {path}")]
    Insecure { path: String, why: String },
}

/// What to do with a blocked flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Discard silently: the program waits until its own timeout.
    #[default]
    Drop,
    /// Refuse: TCP reset or ICMP port unreachable; the program fails at once.
    Reject,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Drop => "DROP",
            Action::Reject => "REJECT",
        })
    }
}

/// What to do with a flow whose program could not be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unknown {
    Accept,
    Drop,
}

/// What happens to traffic while no appfw listens on the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fail {
    /// Traffic flows (`--queue-bypass`).
    #[default]
    Open,
    /// Traffic is dropped until appfw runs again.
    Closed,
}

/// The file an entry names, found when the configuration was loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub id: FileId,
    /// Its path with symlinks resolved, for display.
    pub path: String,
    /// Files the entry named earlier in this run (newest first, at most
    /// [`PREVIOUS_TARGETS`]): a program replaced by a package upgrade is a
    /// new file, and its instances still running the old one keep matching.
    pub previous: Vec<FileId>,
}

impl Target {
    /// Whether `id` is this file or one the entry named before.
    pub fn names(&self, id: FileId) -> bool {
        self.id == id || self.previous.contains(&id)
    }
}

/// How many replaced files an entry keeps matching.
pub const PREVIOUS_TARGETS: usize = 4;

/// One whitelist or blacklist entry. `target` is `None` until
/// [`Config::resolve`] found the file, and stays `None` when there is none:
/// such an entry matches nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// An absolute executable path: the file it names (symlinks followed:
    /// `/usr/bin/python3` is `/usr/bin/python3.11`).
    Exe {
        path: String,
        target: Option<Target>,
    },
    /// A command prefix: the executable the first word names (found
    /// through [`SEARCH_PATH`], or an absolute path), run with argv starting with the
    /// remaining words. argv[0] itself is the caller's to choose and is
    /// never compared.
    Command {
        words: Vec<String>,
        target: Option<Target>,
    },
}

impl Entry {
    /// Parses an entry; `Err` says what is wrong. Touches no files.
    pub fn parse(text: &str) -> Result<Entry, String> {
        let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        let Some(first) = words.first() else {
            return Err("an empty entry; expected an absolute path or a command such as \"nc 198.51.100.2\"".into());
        };
        if first.contains('/') && !first.starts_with('/') {
            return Err(format!(
                "\"{first}\" is a relative path; expected an absolute path such as \"/usr/bin/{}\"",
                first.rsplit('/').next().unwrap_or(first)
            ));
        }
        if words.len() == 1 && first.starts_with('/') {
            return Ok(Entry::Exe {
                path: first.clone(),
                target: None,
            });
        }
        Ok(Entry::Command {
            words,
            target: None,
        })
    }

    pub fn target(&self) -> Option<&Target> {
        match self {
            Entry::Exe { target, .. } | Entry::Command { target, .. } => target.as_ref(),
        }
    }

    /// Finds the file the entry names; `Err` says why there is none.
    pub fn resolve(&mut self, files: &impl Resolver) -> Result<(), String> {
        let (target, found) = match self {
            Entry::Exe { path, target } => (target, files.resolve(Path::new(path.as_str()))),
            Entry::Command { words, target } => {
                let first = &words[0];
                let found = if first.starts_with('/') {
                    files.resolve(Path::new(first.as_str()))
                } else {
                    match files
                        .search_path()
                        .iter()
                        .map(|dir| dir.join(first))
                        .find(|p| files.is_executable(p))
                    {
                        Some(p) => files.resolve(&p),
                        None => Err(format!(
                            "no executable \"{first}\" in PATH ({})",
                            files
                                .search_path()
                                .iter()
                                .map(|d| d.display().to_string())
                                .collect::<Vec<_>>()
                                .join(":")
                        )),
                    }
                };
                (target, found)
            }
        };
        match found {
            Ok(t) => {
                *target = Some(t);
                Ok(())
            }
            Err(e) => {
                *target = None;
                Err(e)
            }
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Exe { path, .. } => f.write_str(path),
            Entry::Command { words, .. } => f.write_str(&words.join(" ")),
        }
    }
}

/// How entries find their files: the host's file system
/// ([`SystemFiles`]), or a table in unit tests.
pub trait Resolver {
    /// The file `path` names, symlinks followed; `Err` says why not.
    fn resolve(&self, path: &Path) -> Result<Target, String>;
    /// Whether `path` is a regular file someone may execute (PATH search).
    fn is_executable(&self, path: &Path) -> bool;
    /// The directories a command's first word is looked up in.
    fn search_path(&self) -> Vec<PathBuf>;
    /// The uid of the user named `name` (a rule's `user`).
    fn uid_of(&self, name: &str) -> Option<u32>;
}

/// Where a command's first word is looked up: the system's directories,
/// not the PATH appfw was started with. That PATH is the invoking user's
/// (sudo keeps some, version managers put shims first) and may hold
/// directories others can write, where a planted file would become the
/// listed program.
pub const SEARCH_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The daemon's file system (its own mount namespace) and [`SEARCH_PATH`].
pub struct SystemFiles;

impl Resolver for SystemFiles {
    fn resolve(&self, path: &Path) -> Result<Target, String> {
        let meta = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a regular file", path.display()));
        }
        let canonical = fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Target {
            id: FileId::of_metadata(&meta),
            path: canonical.to_string_lossy().into_owned(),
            previous: Vec::new(),
        })
    }

    fn is_executable(&self, path: &Path) -> bool {
        fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
    }

    fn search_path(&self) -> Vec<PathBuf> {
        std::env::split_paths(SEARCH_PATH).collect()
    }

    fn uid_of(&self, name: &str) -> Option<u32> {
        crate::rules::system_uid_of(name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file it came from (`None`: built-in defaults).
    pub path: Option<PathBuf>,
    pub queue_num: u16,
    pub whitelist: Vec<Entry>,
    pub blacklist: Vec<Entry>,
    /// `[[rule]]` tables in file order (checked before the lists).
    pub rules: Vec<Rule>,
    pub action: Action,
    /// `None`: drop in whitelist mode, accept otherwise.
    pub unknown: Option<Unknown>,
    pub fail: Fail,
    /// Where to serve Prometheus metrics (`metrics = "127.0.0.1:9464"`).
    pub metrics: Option<std::net::SocketAddr>,
    /// Keep each judged process's verdict in the kernel for its later
    /// flows (`kernel-verdicts = false` sends every new flow to the queue).
    pub kernel_verdicts: bool,
    /// Entries that name no file, said by [`Config::resolve`]; the daemon
    /// logs them.
    pub warnings: Vec<String>,
}

impl Config {
    /// Resolves every entry again (see [`Config::inherit`]); true when an
    /// entry now names another file than before (a package upgrade, a
    /// symlink moved to a new version, a listed file that appeared).
    pub fn refresh(&mut self, files: &impl Resolver) -> bool {
        let before = self.clone();
        self.resolve(files);
        self.inherit(&before);
        self.whitelist != before.whitelist
            || self.blacklist != before.blacklist
            || self.rules != before.rules
    }

    /// Carries over from `old` (the running configuration) the files each
    /// entry named there, for the same entries (by text) here.
    pub fn inherit(&mut self, old: &Config) {
        let old_rules: Vec<&Entry> = old
            .rules
            .iter()
            .filter_map(|r| r.program.as_ref())
            .collect();
        let lists = self.whitelist.iter_mut().map(|e| (e, &old.whitelist[..]));
        let lists = lists.chain(self.blacklist.iter_mut().map(|e| (e, &old.blacklist[..])));
        for (entry, old_list) in lists {
            inherit_entry(entry, old_list.iter());
        }
        for entry in self.rules.iter_mut().filter_map(|r| r.program.as_mut()) {
            inherit_entry(entry, old_rules.iter().copied());
        }
    }

    /// Finds the file of every entry (see [`Entry::resolve`]); an entry
    /// without one matches nothing and gets a warning.
    pub fn resolve(&mut self, files: &impl Resolver) {
        let origin = self
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "configuration".into());
        self.warnings.clear();
        for (key, list) in [
            ("whitelist", &mut self.whitelist),
            ("blacklist", &mut self.blacklist),
        ] {
            for entry in list.iter_mut() {
                if let Err(why) = entry.resolve(files) {
                    self.warnings.push(format!(
                        "{origin}: {key} entry \"{entry}\" names no executable ({why}); it matches nothing until the file exists and appfw reloads (SIGHUP)"
                    ));
                }
            }
        }
        for rule in &mut self.rules {
            if let Err(why) = rule.resolve(files) {
                self.warnings.push(format!(
                    "{origin}:{}: rule {} {why}; it matches nothing until that exists and appfw reloads (SIGHUP)",
                    rule.line, rule.label
                ));
            }
        }
    }
}

/// Gives `entry` the files the same entry (by text) in `old` named.
fn inherit_entry<'a>(entry: &mut Entry, mut old: impl Iterator<Item = &'a Entry>) {
    let text = entry.to_string();
    let Some(was) = old.find(|o| o.to_string() == text).and_then(Entry::target) else {
        return;
    };
    let (Entry::Exe { target, .. } | Entry::Command { target, .. }) = entry;
    if let Some(now) = target {
        now.previous = std::iter::once(was.id)
            .chain(was.previous.iter().copied())
            .filter(|id| *id != now.id)
            .take(PREVIOUS_TARGETS)
            .collect();
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            path: None,
            queue_num: 0,
            whitelist: Vec::new(),
            blacklist: Vec::new(),
            rules: Vec::new(),
            action: Action::Drop,
            unknown: None,
            fail: Fail::Open,
            metrics: None,
            kernel_verdicts: true,
            warnings: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    global: Option<RawGlobal>,
    rule: Option<Vec<RawRule>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawGlobal {
    queue_num: Option<u16>,
    whitelist: Option<Vec<Spanned<String>>>,
    blacklist: Option<Vec<Spanned<String>>>,
    action: Option<Action>,
    unknown: Option<Unknown>,
    fail: Option<Fail>,
    metrics: Option<Spanned<String>>,
    kernel_verdicts: Option<bool>,
}

/// Loads `path`, or the default file; a missing default file gives the
/// built-in defaults, a missing explicit file is an error.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => load_file(p, true),
        None => load_file(Path::new(DEFAULT_CONFIG), false),
    }
}

/// Loads `path`; when it does not exist, that is an error if it is
/// `required` (named by the user, or the file the running configuration
/// came from), and the built-in defaults otherwise.
pub fn load_file(path: &Path, required: bool) -> Result<Config, ConfigError> {
    let path = path.to_path_buf();
    let shown = path.display().to_string();
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !required => return Ok(Config::default()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ConfigError::NotFound { path: shown })
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: shown,
                source,
            })
        }
    };
    let mut config = parse_str(&text, &shown)?;
    config.path = Some(path);
    config.resolve(&SystemFiles);
    Ok(config)
}

/// Refuses a file that anyone but root can write (owner, group or other
/// write permission for non-root).
pub fn check_permissions(path: &Path) -> Result<(), ConfigError> {
    let shown = path.display().to_string();
    let meta = fs::metadata(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let mode = meta.mode();
    let why = if meta.uid() != 0 {
        Some(format!("owned by uid {}", meta.uid()))
    } else if mode & 0o002 != 0 {
        Some("writable by every user".to_owned())
    } else if mode & 0o020 != 0 && meta.gid() != 0 {
        Some(format!("writable by group {}", meta.gid()))
    } else {
        None
    };
    match why {
        Some(why) => Err(ConfigError::Insecure { path: shown, why }),
        None => Ok(()),
    }
}

/// Parses configuration text; `origin` names it in errors.
pub fn parse_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        let (line, key) = (line_of(text, at), key_at(text, at));
        // toml's message can span lines (it quotes the source); keep the
        // first, which is the diagnosis.
        let message = e
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .trim()
            .to_owned();
        ConfigError::Invalid {
            path: origin.to_owned(),
            line,
            key,
            message: explain(&message),
        }
    })?;
    let g = raw.global.unwrap_or_default();
    let entries =
        |list: Option<Vec<Spanned<String>>>, key: &str| -> Result<Vec<Entry>, ConfigError> {
            list.unwrap_or_default()
                .into_iter()
                .map(|s| {
                    Entry::parse(s.get_ref()).map_err(|message| ConfigError::Invalid {
                        path: origin.to_owned(),
                        line: line_of(text, s.span().start),
                        key: format!("global.{key}"),
                        message,
                    })
                })
                .collect()
        };
    let metrics = match g.metrics {
        None => None,
        Some(m) => Some(m.get_ref().parse().map_err(|_| ConfigError::Invalid {
            path: origin.to_owned(),
            line: line_of(text, m.span().start),
            key: "global.metrics".into(),
            message: format!(
                "{:?} is not an address and port: write it like \"127.0.0.1:9464\"",
                m.get_ref()
            ),
        })?),
    };
    Ok(Config {
        path: None,
        queue_num: g.queue_num.unwrap_or(0),
        metrics,
        whitelist: entries(g.whitelist, "whitelist")?,
        blacklist: entries(g.blacklist, "blacklist")?,
        rules: crate::rules::parse(raw.rule.unwrap_or_default(), text, origin)?,
        action: g.action.unwrap_or_default(),
        unknown: g.unknown,
        fail: g.fail.unwrap_or_default(),
        kernel_verdicts: g.kernel_verdicts.unwrap_or(true),
        warnings: Vec::new(),
    })
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The dotted key whose name or value holds byte `offset` (where toml
/// put its error), found in toml's own parse of the file with its spans.
/// A file that does not parse as TOML at all is parsed as far as it goes.
fn key_at(text: &str, offset: usize) -> String {
    let (table, _) = DeTable::parse_recoverable(text);
    let mut path = Vec::new();
    if find_key(table.get_ref(), offset, &mut path) {
        path.join(".")
    } else {
        "(top level)".to_owned()
    }
}

/// Depth first: `path` ends as the innermost key that matches.
fn find_key(table: &DeTable, offset: usize, path: &mut Vec<String>) -> bool {
    let holds = |span: std::ops::Range<usize>| span.contains(&offset);
    for (key, value) in table {
        path.push(key.get_ref().to_string());
        let inner = match value.get_ref() {
            DeValue::Table(t) => find_key(t, offset, path),
            DeValue::Array(items) => items.iter().any(|item| match item.get_ref() {
                DeValue::Table(t) => find_key(t, offset, path),
                _ => false,
            }),
            _ => false,
        };
        if inner || holds(key.span()) || holds(value.span()) {
            return true;
        }
        path.pop();
    }
    false
}

/// toml/serde messages name Rust types; say it in the file's terms.
fn explain(message: &str) -> String {
    message
        .replace("expected u16", "expected a queue number from 0 to 65535")
        .replace(
            "a sequence",
            "a list of strings such as [\"/usr/bin/curl\"]",
        )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn err(text: &str) -> (usize, String, String) {
        match parse_str(text, "test.toml") {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn example_configuration_parses() {
        let text = include_str!("../../config/appfw.toml");
        let c = parse_str(text, "config/appfw.toml").unwrap();
        assert_eq!(c.queue_num, 0);
        assert!(c
            .whitelist
            .iter()
            .any(|e| e.to_string() == "/usr/sbin/sshd"));
        assert!(c.blacklist.iter().any(|e| e.to_string() == "/usr/bin/wget"));
    }

    #[test]
    fn example_rules_parse_once_uncommented() {
        let text = include_str!("../../config/appfw.toml");
        let start = text
            .find("# [[rule]]")
            .expect("the example has commented rules");
        let rules: String = text[start..]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = parse_str(&format!("{}{rules}", &text[..start]), "config/appfw.toml").unwrap();
        assert_eq!(c.rules.len(), 2);
        assert_eq!(&*c.rules[0].label, "curl to debian");
        assert_eq!(c.rules[1].user.as_ref().unwrap().written, "www-data");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse_str("", "x").unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn metrics_address_is_checked_where_it_is_written() {
        assert!(parse_str("", "t.toml").unwrap().kernel_verdicts);
        let off = parse_str("[global]\nkernel-verdicts = false\n", "t.toml").unwrap();
        assert!(!off.kernel_verdicts);
        let e = parse_str("[global]\nkernel-verdicts = \"no\"\n", "t.toml").unwrap_err();
        assert!(
            e.to_string()
                .contains("t.toml:2: key `global.kernel-verdicts`"),
            "{e}"
        );
        let c = parse_str("[global]\nmetrics = \"127.0.0.1:9464\"\n", "t.toml").unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        let e = parse_str("[global]\n\nmetrics = \"localhost\"\n", "t.toml").unwrap_err();
        assert!(
            e.to_string().contains("t.toml:3: key `global.metrics`"),
            "{e}"
        );
    }

    #[test]
    fn all_keys() {
        let c = parse_str(
            "[global]\nqueue-num = 7\naction = \"reject\"\nunknown = \"drop\"\nfail = \"closed\"\nwhitelist = [\"nc 198.51.100.2\"]\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.queue_num, 7);
        assert_eq!(c.action, Action::Reject);
        assert_eq!(c.unknown, Some(Unknown::Drop));
        assert_eq!(c.fail, Fail::Closed);
        assert_eq!(
            c.whitelist,
            vec![Entry::Command {
                words: vec!["nc".into(), "198.51.100.2".into()],
                target: None,
            }]
        );
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let (line, key, message) = err("[global]\nqueue-num = 1\nwhitlist = []\n");
        assert_eq!(line, 3);
        assert_eq!(key, "global.whitlist");
        assert!(message.contains("unknown field"), "{message}");
        assert!(
            message.contains("whitelist"),
            "should list valid keys: {message}"
        );
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let (line, key, message) = err("[global]\nqueue-num = \"zero\"\n");
        assert_eq!((line, key.as_str()), (2, "global.queue-num"));
        assert!(message.contains("queue number"), "{message}");
    }

    #[test]
    fn out_of_range_queue_number_is_refused() {
        let (line, key, _) = err("[global]\nqueue-num = 70000\n");
        assert_eq!((line, key.as_str()), (2, "global.queue-num"));
    }

    #[test]
    fn relative_path_names_the_entry_line() {
        let (line, key, message) =
            err("[global]\nblacklist = [\n  \"/usr/bin/wget\",\n  \"bin/nc\",\n]\n");
        assert_eq!((line, key.as_str()), (4, "global.blacklist"));
        assert!(message.contains("relative path"), "{message}");
    }

    #[test]
    fn bad_enum_value_is_explained() {
        let (line, key, message) = err("[global]\naction = \"deny\"\n");
        assert_eq!((line, key.as_str()), (2, "global.action"));
        assert!(
            message.contains("drop") && message.contains("reject"),
            "{message}"
        );
    }

    #[test]
    fn a_syntax_error_names_the_key_it_breaks() {
        let (line, key, _) = err("[global]\nqueue-num = 1\naction = drop\n");
        assert_eq!((line, key.as_str()), (3, "global.action"));
    }

    #[test]
    fn dotted_keys_and_values_inside_lists_are_located() {
        let (line, key, _) = err("global.queue-num = \"x\"\n");
        assert_eq!((line, key.as_str()), (1, "global.queue-num"));
        let (line, key, message) = err("[global]\nwhitelist = [\n  \"/usr/bin/ssh\",\n  7,\n]\n");
        assert_eq!((line, key.as_str()), (4, "global.whitelist"));
        assert!(message.contains("string"), "{message}");
        // Where reading lines for `=` and `[` went wrong: an inline table,
        // and an `=` inside a string above the broken value.
        let (line, key, _) = err("global = { queue-num = \"x\" }\n");
        assert_eq!((line, key.as_str()), (1, "global.queue-num"));
        let (line, key, _) = err("[global]\nwhitelist = [\n  \"env A=1 x\",\n  7,\n]\n");
        assert_eq!((line, key.as_str()), (4, "global.whitelist"));
    }

    #[test]
    fn unknown_table_is_refused() {
        let (line, key, _) = err("[globl]\nqueue-num = 1\n");
        assert_eq!(line, 1);
        assert_eq!(key, "globl");
    }

    /// A file system in memory: paths (after symlinks) -> identity.
    pub(crate) struct Files {
        pub links: Vec<(&'static str, &'static str)>,
        pub files: Vec<&'static str>,
        pub path: Vec<&'static str>,
    }

    impl Files {
        fn follow<'a>(&'a self, p: &'a str) -> &'a str {
            self.links
                .iter()
                .find(|(l, _)| *l == p)
                .map(|(_, t)| *t)
                .unwrap_or(p)
        }
    }

    impl Resolver for Files {
        fn resolve(&self, path: &Path) -> Result<Target, String> {
            let p = self.follow(path.to_str().unwrap());
            self.files
                .contains(&p)
                .then(|| Target {
                    id: crate::identity::test_id(p),
                    path: p.to_owned(),
                    previous: Vec::new(),
                })
                .ok_or_else(|| format!("{}: No such file or directory", path.display()))
        }
        fn is_executable(&self, path: &Path) -> bool {
            self.files.contains(&self.follow(path.to_str().unwrap()))
        }
        fn search_path(&self) -> Vec<PathBuf> {
            self.path.iter().map(PathBuf::from).collect()
        }
        fn uid_of(&self, name: &str) -> Option<u32> {
            [("root", 0), ("www-data", 33), ("nobody", 65534)]
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, u)| u)
        }
    }

    pub(crate) fn debian() -> Files {
        Files {
            links: vec![
                ("/usr/bin/python3", "/usr/bin/python3.11"),
                ("/usr/bin/nc", "/usr/bin/nc.openbsd"),
                ("/bin/nc.openbsd", "/usr/bin/nc.openbsd"),
            ],
            files: vec![
                "/usr/bin/python3.11",
                "/usr/bin/nc.openbsd",
                "/usr/bin/curl",
                "/usr/local/bin/curl",
            ],
            path: vec!["/usr/sbin", "/usr/bin", "/usr/local/bin"],
        }
    }

    fn resolved(text: &str) -> Entry {
        let mut e = Entry::parse(text).unwrap();
        e.resolve(&debian()).unwrap();
        e
    }

    #[test]
    fn exe_entries_resolve_through_symlinks() {
        let e = resolved("/usr/bin/python3");
        let t = e.target().unwrap();
        assert_eq!(t.id, crate::identity::test_id("/usr/bin/python3.11"));
        assert_eq!(t.path, "/usr/bin/python3.11");
        assert_eq!(e.to_string(), "/usr/bin/python3", "shown as written");
        assert_eq!(
            resolved("/bin/nc.openbsd").target(),
            resolved("/usr/bin/nc").target()
        );
    }

    #[test]
    fn command_first_word_is_found_through_path_in_order() {
        let e = resolved("nc 198.51.100.2");
        assert_eq!(e.target().unwrap().path, "/usr/bin/nc.openbsd");
        // /usr/bin comes before /usr/local/bin in this PATH.
        assert_eq!(resolved("curl -sS").target().unwrap().path, "/usr/bin/curl");
        // An absolute first word is taken as it is.
        assert_eq!(
            resolved("/usr/local/bin/curl -sS").target().unwrap().path,
            "/usr/local/bin/curl"
        );
    }

    #[test]
    fn missing_files_match_nothing_and_are_warned_about() {
        let text = include_str!("../../config/appfw.toml");
        let mut c = parse_str(text, "config/appfw.toml").unwrap();
        c.path = Some("config/appfw.toml".into());
        c.resolve(&debian());
        // sshd is not in this file system: the configuration still loads.
        let sshd = c
            .whitelist
            .iter()
            .find(|e| e.to_string() == "/usr/sbin/sshd")
            .unwrap();
        assert_eq!(sshd.target(), None);
        assert!(
            c.warnings.iter().any(|w| w.starts_with(
                "config/appfw.toml: whitelist entry \"/usr/sbin/sshd\" names no executable"
            )),
            "{:?}",
            c.warnings
        );
        // The blacklist's nc.openbsd exists; wget does not here.
        assert!(c.blacklist.iter().any(|e| e.target().is_some()));
        let mut e = Entry::parse("nosuchprog -x").unwrap();
        let why = e.resolve(&debian()).unwrap_err();
        assert!(
            why.contains(
                "no executable \"nosuchprog\" in PATH (/usr/sbin:/usr/bin:/usr/local/bin)"
            ),
            "{why}"
        );
        assert_eq!(e.target(), None);
    }

    #[test]
    fn resolving_again_follows_changes() {
        let mut e = resolved("/usr/bin/curl");
        let mut gone = debian();
        gone.files.retain(|f| *f != "/usr/bin/curl");
        assert!(e.resolve(&gone).is_err());
        assert_eq!(e.target(), None, "a vanished file no longer matches");
    }

    #[test]
    fn refresh_follows_a_replaced_file_and_keeps_the_old_one() {
        let mut c = Config {
            whitelist: vec![Entry::parse("/usr/bin/python3").unwrap()],
            ..Config::default()
        };
        c.resolve(&debian());
        assert!(!c.refresh(&debian()), "nothing changed");
        // An upgrade moves the symlink to a new version.
        let mut upgraded = debian();
        upgraded.links[0] = ("/usr/bin/python3", "/usr/bin/python3.12");
        upgraded.files.push("/usr/bin/python3.12");
        assert!(c.refresh(&upgraded));
        let t = c.whitelist[0].target().unwrap();
        assert_eq!(t.id, crate::identity::test_id("/usr/bin/python3.12"));
        assert_eq!(
            t.previous,
            vec![crate::identity::test_id("/usr/bin/python3.11")]
        );
        assert!(t.names(crate::identity::test_id("/usr/bin/python3.11")));
        assert!(!t.names(crate::identity::test_id("/usr/bin/curl")));
        // A reload (a fresh configuration) inherits them.
        let mut fresh = Config {
            whitelist: vec![Entry::parse("/usr/bin/python3").unwrap()],
            ..Config::default()
        };
        fresh.resolve(&upgraded);
        fresh.inherit(&c);
        assert_eq!(fresh.whitelist, c.whitelist);
        // The list of old files is bounded.
        for v in 13..20 {
            let mut next = debian();
            let name: &'static str = Box::leak(format!("/usr/bin/python3.{v}").into_boxed_str());
            next.links[0] = ("/usr/bin/python3", name);
            next.files.push(name);
            assert!(c.refresh(&next));
        }
        assert_eq!(
            c.whitelist[0].target().unwrap().previous.len(),
            PREVIOUS_TARGETS
        );
    }

    #[test]
    fn system_files_follow_symlinks_and_refuse_directories() {
        let dir = std::env::temp_dir().join(format!("appfw-unit-{}-symlink", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("real")).unwrap();
        let target = dir.join("real/prog");
        fs::write(&target, b"").unwrap();
        let link = dir.join("prog");
        std::os::unix::fs::symlink("real/prog", &link).unwrap();
        let got = SystemFiles.resolve(&link);
        let want = FileId::of_path(&target).unwrap();
        let canonical = fs::canonicalize(&target).unwrap();
        let not_file = SystemFiles.resolve(&dir);
        fs::remove_dir_all(&dir).unwrap();
        let got = got.unwrap();
        assert_eq!(got.id, want);
        assert_eq!(got.path, canonical.to_str().unwrap());
        assert!(not_file.unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn explicit_missing_file_is_an_error_default_is_not() {
        let missing = Path::new("/nonexistent/appfw.toml");
        assert!(matches!(
            load(Some(missing)),
            Err(ConfigError::NotFound { path }) if path == "/nonexistent/appfw.toml"
        ));
        // The default file, when absent, means the built-in defaults.
        assert_eq!(load_file(missing, false).unwrap(), Config::default());
        assert!(matches!(
            load_file(missing, true),
            Err(ConfigError::NotFound { .. })
        ));
    }

    #[test]
    fn display_names_file_line_key() {
        let e = parse_str("[global]\nfail = 3\n", "/etc/appfw/appfw.toml").unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("/etc/appfw/appfw.toml:2: key `global.fail`:"),
            "{s}"
        );
    }
}
