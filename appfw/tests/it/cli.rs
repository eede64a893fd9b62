//! The command line and configuration as a user meets them.

use std::process::Command;

use crate::testbed::*;

fn appfw(args: &[&str]) -> std::process::Output {
    Command::new(appfw_bin()).args(args).output().unwrap()
}

#[test]
fn help_shows_every_flag() {
    let out = appfw(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "-h, --help",
        "-v, --version",
        "-d, --daemon",
        "--debug",
        "-w, --whitelist",
        "-b, --blacklist",
        "-m, --monitor",
        "-l, --log",
        "-t, --trace <FILENAME>",
        "-c, --config <CONFIG>",
        "--queue-num <N>",
        "--no-rules",
        "trace",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn version_flag() {
    let out = appfw(&["-v"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("appfw {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn modes_exclude_each_other() {
    let out = appfw(&["-w", "-b"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

#[test]
fn bad_config_names_file_line_and_key() {
    let dir = tempdir("badcfg");
    let path = write_config(
        &dir,
        "[global]\nqueue-num = 1\nblacklist = [\"/usr/bin/wget\", \"bin/nc\"]\n",
    );
    let out = appfw(&["-c", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3: key `global.blacklist`", path.display())),
        "{err}"
    );
    assert!(err.contains("relative path"), "{err}");

    let path = write_config(&dir, "[global]\nqueue_num = 1\n");
    let err = String::from_utf8_lossy(&appfw(&["-c", path.to_str().unwrap()]).stderr).into_owned();
    assert!(
        err.contains(":2: key `global.queue_num`: unknown field"),
        "{err}"
    );
    assert!(
        err.contains("queue-num"),
        "the valid keys are listed: {err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn explicit_config_must_exist() {
    let out = appfw(&["-c", "/nonexistent/appfw.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/appfw.toml does not exist"));
}

#[test]
fn config_writable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir("permcfg");
    let path = write_config(&dir, "[global]\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = appfw(&["-c", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("writable by every user") && err.contains("chmod go-w"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn example_config_is_accepted_by_the_daemon() {
    // The documented example, as shipped, is the daemon's policy: its lists
    // are loaded whole and its blacklist blocks what it names.
    let mut bed = Bed::new();
    bed.serve();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/appfw.toml");
    let text = std::fs::read_to_string(example).unwrap();
    let parsed = appfw::config::parse_str(&text, example).unwrap();
    assert!(
        parsed
            .blacklist
            .iter()
            .any(|e| e.to_string() == "/usr/bin/wget"),
        "the example blacklists wget; this test relies on it"
    );
    let d = Daemon::start(&bed, &["-b"], Some(&text));
    let counts = format!(
        "({} whitelist, {} blacklist entries)",
        parsed.whitelist.len(),
        parsed.blacklist.len()
    );
    assert!(
        d.stderr_text().contains(&counts),
        "{counts} not in: {}",
        d.stderr_text()
    );
    let url = format!("http://{SERVER_V4}:{HTTP_PORT}/");
    let wget = bed
        .in_client("/usr/bin/wget")
        .args(["-q", "-O", "-", "--tries=1", "--timeout=2", &url])
        .output()
        .unwrap();
    assert!(
        !wget.status.success(),
        "wget is blacklisted by the example but got through"
    );
    let curl = bed.curl(SERVER_V4, 5.0);
    assert!(
        String::from_utf8_lossy(&curl.stdout).contains("appfw-test-ok"),
        "curl is not in the example's blacklist and must connect: {curl:?}"
    );
    d.wait_trace_line(&["'/usr/bin/wget'", "is in blacklist -> DROP."]);
    d.stop();
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("appfwt-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
