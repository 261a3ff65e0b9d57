//! The link order of a binary's functions, shared by the build scripts of `bench/` and `cli/`.
//!
//! The kernel maps 64 kB of a binary around each page of code it runs, and start-up runs code
//! spread all over the binary: placed as the compiler leaves it, two thirds of bench-echo's code
//! was resident at idle. `startup.order` (written by `bench/link-order.sh`) lists the functions
//! start-up and an idle appservice run, then those an echo runs, and the linker places them first,
//! in that order. A function the list does not name (new, or renamed by a dependency's update) is
//! placed as before, so a stale list costs memory, never correctness.

use std::{env, path::Path};

/// Asks the linker to place `binary`'s functions in `startup.order`'s order, in optimised builds
/// for the one target where rustc's default linker is known to be LLD, which reads such a list.
/// Another linker (one set in the configuration or the flags) is left alone: GNU ld refuses the
/// option.
pub fn link_in_order(binary: &str) {
    let manifest = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = Path::new(&manifest).join("../link/startup.order");
    println!("cargo::rerun-if-changed={}", order.display());
    println!("cargo::rerun-if-env-changed=RUSTC_LINKER");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = env::var("TARGET").unwrap_or_default();
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let own_linker = env::var_os("RUSTC_LINKER").is_some()
        || ["linker", "link-self-contained", "fuse-ld"]
            .iter()
            .any(|f| flags.contains(f));
    if release && target == "x86_64-unknown-linux-gnu" && !own_linker && order.is_file() {
        let order = order.canonicalize().unwrap_or(order);
        println!(
            "cargo::rustc-link-arg-bin={binary}=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // Names the list has and this binary lacks (the other binary's) are not worth a warning.
        println!("cargo::rustc-link-arg-bin={binary}=-Wl,--no-warn-symbol-ordering");
    }
}
