//! Builds the BPF object from `bpf/` and generates its libbpf-rs skeleton in OUT_DIR.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

/// The BPF program compiled into the skeleton.
const BPF_SOURCE: &str = "bpf/collector.bpf.c";
/// Every file the BPF build reads; a change to any of them rebuilds.
const BPF_INPUTS: &[&str] = &[BPF_SOURCE, "bpf/cac_abi.h", "bpf/vmlinux_min.h"];
/// Name of the generated skeleton inside OUT_DIR.
const SKELETON: &str = "collector.skel.rs";
/// Compilers tried in order when `BPF_CLANG` is not set: a recent clang first.
const CLANGS: &[&str] = &["clang-19", "clang"];

fn main() {
    for input in BPF_INPUTS {
        println!("cargo:rerun-if-changed={input}");
    }
    println!("cargo:rerun-if-env-changed=BPF_CLANG");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("BPF_CLANG").ok().unwrap_or_else(|| {
        CLANGS
            .iter()
            .find(|c| which(c))
            .unwrap_or(&"clang")
            .to_string()
    });

    SkeletonBuilder::new()
        .source(BPF_SOURCE)
        .clang(&clang)
        .clang_args([
            "-Wall",
            "-Werror",
            // The minimal vmlinux header is self-contained: keep host headers out.
            "-nostdinc",
            "-Ibpf",
        ])
        .build_and_generate(out.join(SKELETON))
        .unwrap_or_else(|e| panic!("building {BPF_SOURCE} with {clang}: {e:#}"));
}

/// Whether `cmd` is an executable on PATH.
fn which(cmd: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join(cmd).is_file()))
}
