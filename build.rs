//! Builds the BPF objects from `bpf/` and generates their libbpf-rs skeletons in OUT_DIR.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

/// Each BPF source and the name of its skeleton inside OUT_DIR: the
/// collector's programs, and the empty programs only the benchmarks load
/// (the floor they compare against).
const OBJECTS: &[(&str, &str)] = &[
    ("bpf/collector.bpf.c", "collector.skel.rs"),
    ("bpf/floor.bpf.c", "floor.skel.rs"),
];
/// Headers the sources include; a change to any of them rebuilds.
const BPF_HEADERS: &[&str] = &["bpf/cac_abi.h", "bpf/vmlinux_min.h"];
/// Compilers tried in order when `BPF_CLANG` is not set: a recent clang first.
const CLANGS: &[&str] = &["clang-19", "clang"];

fn main() {
    for input in OBJECTS.iter().map(|(src, _)| src).chain(BPF_HEADERS) {
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

    for (source, skeleton) in OBJECTS {
        SkeletonBuilder::new()
            .source(source)
            .clang(&clang)
            .clang_args([
                "-Wall",
                "-Werror",
                // The minimal vmlinux header is self-contained: keep host headers out.
                "-nostdinc",
                "-Ibpf",
            ])
            .build_and_generate(out.join(skeleton))
            .unwrap_or_else(|e| panic!("building {source} with {clang}: {e:#}"));
    }
}

/// Whether `cmd` is an executable on PATH.
fn which(cmd: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join(cmd).is_file()))
}
