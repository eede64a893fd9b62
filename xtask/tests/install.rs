//! `cargo xtask install` / `uninstall` into a temporary --destdir, and the
//! installed pieces as an administrator meets them: the man page renders,
//! the completions know the commands, the unit passes systemd-analyze.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// The appfw binary `cargo test` built for appfw's own integration tests.
fn appfw_bin() -> PathBuf {
    let bin = root().join("target/debug/appfw");
    assert!(
        bin.exists(),
        "{} is missing: run the whole workspace's tests (cargo xtask test), which build it",
        bin.display()
    );
    bin
}

fn xtask(args: &[&str], destdir: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .arg("--destdir")
        .arg(destdir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xtask {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn install(destdir: &Path, prefix: &str) {
    let bin = appfw_bin();
    xtask(
        &[
            "install",
            "--prefix",
            prefix,
            "--binary",
            bin.to_str().unwrap(),
        ],
        destdir,
    );
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("appfw-xtask-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

const FILES: [(&str, u32); 8] = [
    ("usr/local/sbin/appfw", 0o755),
    ("etc/appfw/appfw.toml", 0o644),
    ("usr/local/lib/systemd/system/appfw.service", 0o644),
    ("usr/local/share/man/man8/appfw.8", 0o644),
    ("usr/local/share/bash-completion/completions/appfw", 0o644),
    ("usr/local/share/zsh/site-functions/_appfw", 0o644),
    (
        "usr/local/share/fish/vendor_completions.d/appfw.fish",
        0o644,
    ),
    ("usr/local/share/doc/appfw/README.md", 0o644),
];

#[test]
fn install_puts_every_file_in_place_and_uninstall_removes_only_those() {
    let d = tempdir("install");
    // Something of the administrator's that was there before.
    fs::create_dir_all(d.join("usr/local/share/man/man8")).unwrap();
    fs::write(d.join("usr/local/share/man/man8/other.8"), "x").unwrap();
    install(&d, "/usr/local");
    for (path, want) in FILES {
        assert_eq!(mode(&d.join(path)), want, "mode of {path}");
    }
    assert_eq!(
        fs::read(d.join("usr/local/sbin/appfw")).unwrap(),
        fs::read(appfw_bin()).unwrap()
    );
    assert_eq!(
        fs::read(d.join("etc/appfw/appfw.toml")).unwrap(),
        fs::read(root().join("config/appfw.toml")).unwrap()
    );
    let unit = fs::read_to_string(d.join("usr/local/lib/systemd/system/appfw.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/sbin/appfw "), "{unit}");

    xtask(&["uninstall"], &d);
    for (path, _) in FILES {
        assert!(!d.join(path).exists(), "{path} survived uninstall");
    }
    assert!(
        d.join("usr/local/share/man/man8/other.8").exists(),
        "uninstall removed a file install did not put there"
    );
    assert!(!d.join("etc").exists(), "install's own directories stay");
    let _ = fs::remove_dir_all(d);
}

#[test]
fn install_never_overwrites_a_configuration() {
    let d = tempdir("keepcfg");
    fs::create_dir_all(d.join("etc/appfw")).unwrap();
    let mine = "[global]\nqueue-num = 7\n";
    fs::write(d.join("etc/appfw/appfw.toml"), mine).unwrap();
    install(&d, "/usr");
    assert_eq!(
        fs::read_to_string(d.join("etc/appfw/appfw.toml")).unwrap(),
        mine
    );
    // Another prefix: the binary and the unit follow it.
    assert_eq!(mode(&d.join("usr/sbin/appfw")), 0o755);
    let unit = fs::read_to_string(d.join("usr/lib/systemd/system/appfw.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/sbin/appfw "), "{unit}");
    xtask(&["uninstall", "--prefix", "/usr"], &d);
    assert_eq!(
        fs::read_to_string(d.join("etc/appfw/appfw.toml")).unwrap(),
        mine,
        "uninstall removed a configuration install had not written"
    );
    assert!(!d.join("usr/sbin/appfw").exists());
    let _ = fs::remove_dir_all(d);
}

#[test]
fn man_page_renders_and_completions_name_commands_and_flags() {
    let d = tempdir("docs");
    install(&d, "/usr/local");
    let out = Command::new("man")
        .arg("-l")
        .arg(d.join("usr/local/share/man/man8/appfw.8"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man (apt-get install man-db)");
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8_lossy(&out.stdout);
    for word in [
        "appfw(8)",
        "--whitelist",
        "--queue-num",
        "trace",
        "completions",
    ] {
        assert!(page.contains(word), "the man page lacks {word}:\n{page}");
    }
    for (file, shell) in [
        ("usr/local/share/bash-completion/completions/appfw", "bash"),
        ("usr/local/share/zsh/site-functions/_appfw", "zsh"),
        (
            "usr/local/share/fish/vendor_completions.d/appfw.fish",
            "fish",
        ),
    ] {
        let script = fs::read_to_string(d.join(file)).unwrap();
        for word in ["trace", "completions", "whitelist", "queue-num", "config"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    // bash itself reads the script and completes the subcommand.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(appfw tr); COMP_CWORD=1; _appfw appfw tr appfw; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            d.join("usr/local/share/bash-completion/completions/appfw").display()
        ))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == "trace"),
        "bash did not complete `appfw tr` to trace: {out:?}"
    );
    let _ = fs::remove_dir_all(d);
}

/// `systemd-analyze verify config/appfw.service` with the binary and the
/// man page where the unit says they are: in a private mount namespace, a
/// tmpfs over /usr/local/sbin holds the binary (the machine's is untouched).
#[test]
fn unit_passes_systemd_analyze_verify() {
    let d = tempdir("unit");
    install(&d, "/usr/local");
    let verify = |unit: &Path| {
        let script = format!(
            "mount -t tmpfs tmpfs /usr/local/sbin && cp {} /usr/local/sbin/appfw && exec systemd-analyze verify {}",
            appfw_bin().display(),
            unit.display()
        );
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env("MANPATH", d.join("usr/local/share/man"))
            .output()
            .expect("unshare and systemd-analyze (apt-get install util-linux systemd)")
    };
    let out = verify(&root().join("config/appfw.service"));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The check has teeth: a misspelt directive fails it.
    let bad = d.join("appfw.service");
    let text = fs::read_to_string(root().join("config/appfw.service")).unwrap();
    fs::write(&bad, text.replace("WatchdogSec=", "WatchdogSecs=")).unwrap();
    let out = verify(&bad);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("WatchdogSecs"),
        "{out:?}"
    );
    let _ = fs::remove_dir_all(d);
}
