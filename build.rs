//! Link options for the `fleetdns` binary.

fn main() {
    // Pack the position-independent binary's relocations (DT_RELR, glibc
    // 2.36 and binutils 2.38 or later): 1.1 MB of `.rela.dyn`, which the
    // dynamic loader reads whole at every start, becomes 10 KB. The
    // daemon's resident memory at startup falls by 1.4 MB (issue 18,
    // benches/results/); the binary stays position independent.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
