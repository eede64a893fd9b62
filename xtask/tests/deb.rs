//! `cargo xtask deb`: the package is inspected with dpkg-deb, never
//! installed on this machine.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("dpkg-deb (apt-get install dpkg)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn deb_has_every_file_the_config_as_conffile_and_starts_nothing() {
    let bin = root().join("target/debian-test-appfw");
    let debug = root().join("target/debug/appfw");
    assert!(
        debug.exists(),
        "{} is missing: run the whole workspace's tests (cargo xtask test)",
        debug.display()
    );
    std::fs::copy(&debug, &bin).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["deb", "--fast", "--binary"])
        .arg(&bin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xtask deb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&bin);
    let deb = root().join(format!(
        "target/debian/appfw_{}-1_amd64.deb",
        env!("CARGO_PKG_VERSION")
    ));
    let info = dpkg_deb(&["--info"], &deb);
    assert!(info.contains("Package: appfw"), "{info}");
    assert!(
        info.contains("Depends: ") && info.contains("iptables"),
        "{info}"
    );
    let contents = dpkg_deb(&["--contents"], &deb);
    for (mode, path) in [
        ("-rwxr-xr-x", "./usr/sbin/appfw"),
        ("-rw-r--r--", "./etc/appfw/appfw.toml"),
        ("-rw-r--r--", "./usr/lib/systemd/system/appfw.service"),
        ("-rw-r--r--", "./usr/share/man/man8/appfw.8.gz"),
        (
            "-rw-r--r--",
            "./usr/share/bash-completion/completions/appfw",
        ),
        ("-rw-r--r--", "./usr/share/zsh/vendor-completions/_appfw"),
        (
            "-rw-r--r--",
            "./usr/share/fish/vendor_completions.d/appfw.fish",
        ),
    ] {
        assert!(
            contents
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{mode} {path} not in:\n{contents}"
        );
    }
    let ctl = std::env::temp_dir().join(format!("appfw-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ctl);
    let out = Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(&ctl)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(ctl.join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/appfw/appfw.toml"
    );
    // An administrator enables the service: no maintainer script may.
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        let text = std::fs::read_to_string(ctl.join(script)).unwrap_or_default();
        assert!(
            !text.contains("enable") && !text.contains("start"),
            "{script} enables or starts something:\n{text}"
        );
    }
    // The packaged unit runs the packaged binary.
    let unit = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dpkg-deb --fsys-tarfile {} | tar -xO ./usr/lib/systemd/system/appfw.service",
            deb.display()
        ))
        .output()
        .unwrap();
    let unit = String::from_utf8_lossy(&unit.stdout);
    assert!(unit.contains("ExecStart=/usr/sbin/appfw "), "{unit}");
    let _ = std::fs::remove_dir_all(ctl);
}
