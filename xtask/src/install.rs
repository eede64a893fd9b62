//! `cargo xtask install` and `uninstall`: the binary, the configuration,
//! the systemd unit, the man page and the shell completions, each where the
//! distribution looks for it. Install writes a list of what it created;
//! uninstall removes exactly that, so files that were there before (an
//! existing configuration) survive both.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Stage the files below DIR instead of / (for packaging and tests).
    #[arg(long, value_name = "DIR")]
    pub destdir: Option<PathBuf>,
    /// Where the binary, unit, man page and completions go.
    #[arg(long, value_name = "PREFIX", default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// Install this appfw binary instead of building the release one.
    #[arg(long, value_name = "FILE")]
    pub binary: Option<PathBuf>,
}

/// Where install records what it created, relative to the prefix.
const MANIFEST: &str = "share/appfw/installed-files";
/// The configuration path is fixed: the daemon reads it by default.
const CONFIG: &str = "/etc/appfw/appfw.toml";

/// One file install writes: its path on the target system, its mode, and
/// how to make its contents.
struct Item {
    path: PathBuf,
    mode: u32,
    contents: Vec<u8>,
    /// Kept when it exists (the administrator's configuration).
    keep_existing: bool,
}

/// The files of an installation with `prefix`, made with `binary`.
fn items(prefix: &Path, binary: &Path) -> Result<Vec<Item>> {
    let root = crate::root();
    let sbin = prefix.join("sbin/appfw");
    let generated = |args: &[&str]| -> Result<Vec<u8>> {
        let out = Command::new(binary)
            .args(args)
            .output()
            .with_context(|| format!("running {} {}", binary.display(), args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "{} {} failed: {}",
                binary.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out.stdout)
    };
    // The unit names the binary and the documentation by path: point them
    // at this prefix.
    let unit = fs::read_to_string(root.join("config/appfw.service"))?
        .replace("/usr/local/sbin/appfw", &sbin.to_string_lossy())
        .replace(
            "/usr/local/share/doc/appfw",
            &prefix.join("share/doc/appfw").to_string_lossy(),
        );
    let file = |path: PathBuf, mode, contents| Item {
        path,
        mode,
        contents,
        keep_existing: false,
    };
    Ok(vec![
        file(
            sbin.clone(),
            0o755,
            fs::read(binary).with_context(|| format!("reading {}", binary.display()))?,
        ),
        Item {
            path: CONFIG.into(),
            mode: 0o644,
            contents: fs::read(root.join("config/appfw.toml"))?,
            keep_existing: true,
        },
        file(
            prefix.join("lib/systemd/system/appfw.service"),
            0o644,
            unit.into_bytes(),
        ),
        file(
            prefix.join("share/man/man8/appfw.8"),
            0o644,
            generated(&["man"])?,
        ),
        file(
            prefix.join("share/bash-completion/completions/appfw"),
            0o644,
            generated(&["completions", "bash"])?,
        ),
        file(
            prefix.join("share/zsh/site-functions/_appfw"),
            0o644,
            generated(&["completions", "zsh"])?,
        ),
        file(
            prefix.join("share/fish/vendor_completions.d/appfw.fish"),
            0o644,
            generated(&["completions", "fish"])?,
        ),
        file(
            prefix.join("share/doc/appfw/README.md"),
            0o644,
            fs::read(root.join("README.md"))?,
        ),
    ])
}

/// `path` (absolute, on the target system) below `destdir`.
fn staged(destdir: Option<&Path>, path: &Path) -> PathBuf {
    match destdir {
        Some(d) => d.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_path_buf(),
    }
}

fn check_prefix(prefix: &Path) -> Result<()> {
    if !prefix.is_absolute() {
        bail!(
            "--prefix {} is not an absolute path: give one such as /usr/local or /usr",
            prefix.display()
        );
    }
    Ok(())
}

/// Creates the directories above `path` that are missing, recording each
/// (on the target system) in `created`, outermost first.
fn create_parents(destdir: Option<&Path>, path: &Path, created: &mut Vec<PathBuf>) -> Result<()> {
    let mut missing = Vec::new();
    let mut dir = path.parent();
    while let Some(d) = dir {
        if staged(destdir, d).exists() {
            break;
        }
        missing.push(d.to_path_buf());
        dir = d.parent();
    }
    for d in missing.into_iter().rev() {
        let at = staged(destdir, &d);
        fs::create_dir(&at).with_context(|| format!("creating {}", at.display()))?;
        fs::set_permissions(&at, fs::Permissions::from_mode(0o755))?;
        created.push(d);
    }
    Ok(())
}

pub fn install(args: Args) -> Result<()> {
    check_prefix(&args.prefix)?;
    let binary = match args.binary {
        Some(b) => b,
        None => crate::build_release()?,
    };
    let destdir = args.destdir.as_deref();
    if let Some(d) = destdir {
        fs::create_dir_all(d).with_context(|| format!("creating --destdir {}", d.display()))?;
    }
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for item in items(&args.prefix, &binary)? {
        let at = staged(destdir, &item.path);
        if item.keep_existing && at.exists() {
            println!(
                "kept     {} (it exists; the example is not installed over it)",
                at.display()
            );
            continue;
        }
        create_parents(destdir, &item.path, &mut dirs)?;
        // A running binary cannot be opened for writing: replace it.
        let tmp = at.with_extension("xtask-new");
        fs::write(&tmp, &item.contents).with_context(|| format!("writing {}", at.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(item.mode))?;
        fs::rename(&tmp, &at).with_context(|| format!("writing {}", at.display()))?;
        println!("{:o}     {}", item.mode, at.display());
        files.push(item.path);
    }
    let manifest = args.prefix.join(MANIFEST);
    create_parents(destdir, &manifest, &mut dirs)?;
    let mut text = String::new();
    for f in &files {
        text += &format!("f {}\n", f.display());
    }
    // Innermost first, so uninstall can remove them in order.
    for d in dirs.iter().rev() {
        text += &format!("d {}\n", d.display());
    }
    fs::write(staged(destdir, &manifest), text)?;
    println!(
        "installed; enable the service with: systemctl daemon-reload && systemctl enable --now appfw"
    );
    Ok(())
}

pub fn uninstall(args: Args) -> Result<()> {
    check_prefix(&args.prefix)?;
    let destdir = args.destdir.as_deref();
    let manifest = staged(destdir, &args.prefix.join(MANIFEST));
    let text = match fs::read_to_string(&manifest) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} does not exist: nothing was installed with this --prefix{}",
            manifest.display(),
            if destdir.is_some() {
                " and --destdir"
            } else {
                ""
            }
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", manifest.display())),
    };
    let shipped = fs::read(crate::root().join("config/appfw.toml"))?;
    // Read already; gone first, so that the directories install made for
    // it are empty when their turn comes.
    fs::remove_file(&manifest).with_context(|| format!("removing {}", manifest.display()))?;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("f", path)) => {
                let at = staged(destdir, Path::new(path));
                if path == CONFIG && fs::read(&at).is_ok_and(|now| now != shipped) {
                    println!("kept     {} (changed since install)", at.display());
                    continue;
                }
                match fs::remove_file(&at) {
                    Ok(()) => println!("removed  {}", at.display()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_context(|| format!("removing {}", at.display())),
                }
            }
            Some(("d", path)) => {
                let at = staged(destdir, Path::new(path));
                // Only when empty: something else may have put files there since.
                if fs::remove_dir(&at).is_ok() {
                    println!("removed  {}/", at.display());
                }
            }
            _ => bail!("{}: unexpected line {line:?}", manifest.display()),
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct DebArgs {
    /// Package this appfw binary instead of building the release one.
    #[arg(long, value_name = "FILE")]
    pub binary: Option<PathBuf>,
    /// Compress quickly (larger package; for tests).
    #[arg(long)]
    pub fast: bool,
}

/// cargo-deb, built into target/tools on first use.
fn cargo_deb() -> Result<PathBuf> {
    let root = crate::root().join("target/tools/cargo-deb");
    let bin = root.join("bin/cargo-deb");
    if !bin.exists() {
        eprintln!("xtask: building cargo-deb 3.8.0 into {}", root.display());
        crate::run_cmd(
            crate::cargo()
                .args([
                    "install",
                    "cargo-deb",
                    "--version",
                    "3.8.0",
                    "--locked",
                    "--root",
                ])
                .arg(&root),
        )?;
    }
    Ok(bin)
}

/// `cargo xtask deb`: target/debian/appfw_VERSION-1_ARCH.deb.
pub fn deb(args: DebArgs) -> Result<()> {
    let binary = match args.binary {
        Some(b) => b,
        None => crate::build_release()?,
    };
    let tool = cargo_deb()?;
    let root = crate::root();
    let assets = root.join("target/deb-assets");
    let _ = fs::remove_dir_all(&assets);
    fs::create_dir_all(&assets)?;
    let prefix = Path::new("/usr");
    for item in items(prefix, &binary)? {
        let name = match item.path.to_str().unwrap_or_default() {
            "/usr/sbin/appfw" => "appfw",
            "/usr/share/man/man8/appfw.8" => "appfw.8",
            "/usr/share/bash-completion/completions/appfw" => "appfw.bash",
            "/usr/share/zsh/site-functions/_appfw" => "_appfw",
            "/usr/share/fish/vendor_completions.d/appfw.fish" => "appfw.fish",
            "/usr/lib/systemd/system/appfw.service" => "appfw.service",
            _ => continue,
        };
        let at = assets.join(name);
        fs::write(&at, &item.contents)?;
        fs::set_permissions(&at, fs::Permissions::from_mode(item.mode))?;
    }
    let out_dir = root.join("target/debian");
    fs::create_dir_all(&out_dir)?;
    let mut cmd = Command::new(tool);
    crate::clean_env(&mut cmd);
    crate::run_cmd(
        cmd.current_dir(&root)
            .args(["deb", "-p", "appfw", "--no-build", "--no-strip", "--output"])
            .arg(&out_dir)
            .args(args.fast.then_some("--fast")),
    )?;
    Ok(())
}
