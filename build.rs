//! Link options for the `fleetdns` binary.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FLEETDNS_NO_RELR");
    if relr_supported() && std::env::var_os("FLEETDNS_NO_RELR").is_none() {
        // Pack the position-independent binary's relocations (DT_RELR):
        // 1.1 MB of `.rela.dyn`, which the dynamic loader reads whole at
        // every start, becomes 10 KB, and the daemon's resident memory at
        // startup falls by 1.4 MB (issue 18, benches/results/); the binary
        // stays position independent. The linker then makes the binary
        // require glibc 2.36 (GLIBC_ABI_DT_RELR): set FLEETDNS_NO_RELR=1
        // to build one that also runs on an older glibc (Amazon Linux
        // 2023 has 2.34, Ubuntu 22.04 2.35).
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the binary is linked for glibc 2.36 or later on this machine
/// (the linker refuses the option against an older one). Cross builds
/// and other C libraries go without.
fn relr_supported() -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux"
        || var("CARGO_CFG_TARGET_ENV") != "gnu"
        || var("TARGET") != var("HOST")
    {
        return false;
    }
    // "glibc 2.36"
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text
        .trim()
        .strip_prefix("glibc ")
        .unwrap_or_default()
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    (major, minor) >= (2, 36)
}
