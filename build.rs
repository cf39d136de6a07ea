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
    println!("cargo:rerun-if-changed={CODE_ORDER}");
    println!("cargo:rerun-if-env-changed=FLEETDNS_NO_CODE_ORDER");
    if lld_links() && std::env::var_os("FLEETDNS_NO_CODE_ORDER").is_none() {
        // Put the functions a daemon runs together at the start of .text,
        // in the order scripts/code-order profiled: the kernel maps code
        // 64 KB around each page touched, and the code that runs, spread
        // over 12 MB, held 5.1 MB resident; together it holds 2.4 MB, and
        // peak RSS at 100,000 names fell by 3.2 MB (issue 18,
        // benches/results/2026-12-05-code-order.md). Names the list has
        // and the binary lacks (a dev build, a stale list) are skipped
        // silently: they cost memory, not correctness, and
        // `scripts/code-order --check` says how many are in place.
        let list = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join(CODE_ORDER);
        if list.exists() {
            println!(
                "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
                list.display()
            );
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
    }
}

/// The functions to place first, made by scripts/code-order.
const CODE_ORDER: &str = "link/code-order.txt";

/// An environment variable, or empty.
fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// Whether rustc links the binary with its own lld, which takes a symbol
/// ordering file: its default for x86_64-unknown-linux-gnu since Rust
/// 1.90, where the toolchain has it. Not when the build names its own
/// linker or linker flags (GNU ld refuses the option), or with an older
/// rustc; `FLEETDNS_NO_CODE_ORDER=1` leaves the order out wherever this
/// guesses wrong.
fn lld_links() -> bool {
    if var("TARGET") != "x86_64-unknown-linux-gnu" || std::env::var_os("RUSTC_LINKER").is_some() {
        return false;
    }
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if ["linker", "link-self-contained", "fuse-ld"]
        .iter()
        .any(|flag| flags.contains(flag))
    {
        return false;
    }
    // "release: 1.95.0"
    let Ok(out) = Command::new(var("RUSTC")).arg("-vV").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(release) = text.lines().find_map(|line| line.strip_prefix("release: ")) else {
        return false;
    };
    if major_minor(release) < (1, 90) {
        return false;
    }
    // A rustc that ships its lld (rustup's do); one built without it (some
    // distributions' packages) links with the system's cc and GNU ld.
    let Ok(out) = Command::new(var("RUSTC"))
        .args(["--print", "sysroot"])
        .output()
    else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout);
    std::path::Path::new(sysroot.trim())
        .join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld/ld.lld")
        .exists()
}

/// Whether the binary is linked for glibc 2.36 or later on this machine
/// (the linker refuses the option against an older one). Cross builds
/// and other C libraries go without.
fn relr_supported() -> bool {
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
    major_minor(text.trim().strip_prefix("glibc ").unwrap_or_default()) >= (2, 36)
}

/// The first two numbers of a version such as "1.95.0" or "2.36" (0 for
/// what is missing or not a number).
fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version
        .split(['.', '-'])
        .map(|part| part.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}
