//! Compiles the XDP steering program (bpf/steer.c) and the offload
//! uplink's redirect (bpf/to_uplink.c) with clang. Needs clang
//! and the kernel's UAPI headers (Debian: clang, linux-libc-dev), which
//! `.ci/test` installs along with xsk-rs's build dependencies.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/steer.c");
    println!("cargo:rerun-if-changed=bpf/to_uplink.c");
    if std::env::var_os("CARGO_FEATURE_IO").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    // The asm/ headers live under the multiarch directory on Debian.
    let multiarch = Command::new("cc")
        .arg("-print-multiarch")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "x86_64-linux-gnu".into());
    for name in ["steer", "to_uplink"] {
        let status = Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".into()))
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .args(["-c", &format!("bpf/{name}.c"), "-o"])
            .arg(out.join(format!("{name}.o")))
            .status()
            .expect("clang not found: install clang (see README's test command)");
        assert!(status.success(), "clang failed to build bpf/{name}.c");
    }
}
