//! Embeds the eBPF object built by `cargo xtask build-ebpf`, so that the
//! `appfw` binary is the one file to deploy.
//!
//! When the object has not been built (plain `cargo build` or `cargo clippy`
//! on a machine without the eBPF toolchain), an empty object is embedded and
//! appfw says at start that it must be built with `cargo xtask build`.

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!("cargo::rerun-if-env-changed=APPFW_EBPF_OBJECT");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");
    let object = match env::var_os("APPFW_EBPF_OBJECT") {
        Some(p) => PathBuf::from(p),
        None => env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join("../target"))
            .join("bpfel-unknown-none/release/appfw-ebpf"),
    };
    println!("cargo::rerun-if-changed={}", object.display());
    let dest = out.join("appfw-ebpf.o");
    match fs::read(&object) {
        Ok(bytes) => fs::write(&dest, bytes).expect("writing OUT_DIR/appfw-ebpf.o"),
        Err(_) => {
            println!(
                "cargo::warning=eBPF object {} not found: this appfw cannot load its kernel programs; build with `cargo xtask build`",
                object.display()
            );
            fs::write(&dest, []).expect("writing OUT_DIR/appfw-ebpf.o");
        }
    }
}
