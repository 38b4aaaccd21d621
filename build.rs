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
const BPF_HEADERS: &[&str] = &[
    "bpf/cac_abi.h",
    "bpf/vmlinux_min.h",
    "bpf/svc_endpoints.bpf.h",
];
/// Compilers tried in order when `BPF_CLANG` is not set: a recent clang first.
const CLANGS: &[&str] = &["clang-19", "clang"];
/// Flags of every BPF compile.
const CLANG_ARGS: &[&str] = &[
    "-Wall",
    "-Werror",
    // The minimal vmlinux header is self-contained: keep host headers out.
    "-nostdinc",
    "-Ibpf",
];
/// The collector's programs are also built for the image's other
/// architecture, as `collector.<arch>.bpf.o` (tests/architectures.rs checks
/// that object; it cannot be loaded on this machine).
const CROSS_SOURCE: &str = "bpf/collector.bpf.c";

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
        let object = out.join(skeleton.replace(".skel.rs", ".bpf.o"));
        SkeletonBuilder::new()
            .source(source)
            .obj(&object)
            .clang(&clang)
            .clang_args(CLANG_ARGS)
            .build_and_generate(out.join(skeleton))
            .unwrap_or_else(|e| panic!("building {source} with {clang}: {e:#}"));
    }
    // x86_64 and arm64 images: the architecture that is not the target.
    let other = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "x86",
        _ => "arm64",
    };
    let define = format!("-D__TARGET_ARCH_{other}");
    SkeletonBuilder::new()
        .source(CROSS_SOURCE)
        .obj(out.join(format!("collector.{other}.bpf.o")))
        .clang(&clang)
        .clang_args(CLANG_ARGS.iter().copied().chain([define.as_str()]))
        .build()
        .unwrap_or_else(|e| panic!("building {CROSS_SOURCE} for {other} with {clang}: {e:#}"));
    // Where the tests find the objects.
    println!("cargo:rustc-env=CAC_BPF_OBJECTS={}", out.display());
}

/// Whether `cmd` is an executable on PATH.
fn which(cmd: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join(cmd).is_file()))
}
