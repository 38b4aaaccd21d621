//! The BPF programs built for the image's other architecture: build.rs
//! compiles `bpf/collector.bpf.c` for the target (embedded in the skeleton)
//! and for the other one (`collector.arm64.bpf.o` on x86_64 hosts). That
//! object cannot be loaded here, so it gets the checks that need no
//! verifier: libbpf opens it (its ELF, BTF and relocations parse), it has
//! the native object's programs, sections and maps, its kernel/user ABI
//! structs have the same sizes and members, and it reads syscall arguments
//! from its own architecture's registers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The objects build.rs wrote: (native, other architecture's).
fn objects() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CAC_BPF_OBJECTS"));
    let other = match std::env::consts::ARCH {
        "aarch64" => "x86",
        _ => "arm64",
    };
    (
        dir.join("collector.bpf.o"),
        dir.join(format!("collector.{other}.bpf.o")),
    )
}

/// (program name, section) and map names of an object, as libbpf opens it.
fn contents(path: &Path) -> (Vec<(String, String)>, Vec<String>) {
    let obj = libbpf_rs::ObjectBuilder::default()
        .open_file(path)
        .unwrap_or_else(|e| panic!("libbpf cannot open {}: {e}", path.display()));
    let progs = obj
        .progs()
        .map(|p| {
            (
                p.name().to_string_lossy().into_owned(),
                p.section().to_string_lossy().into_owned(),
            )
        })
        .collect();
    let maps = obj
        .maps()
        .map(|m| m.name().to_string_lossy().into_owned())
        .collect();
    (progs, maps)
}

/// The BTF of an object as `bpftool btf dump file` prints it.
fn btf(path: &Path) -> String {
    let out = Command::new("bpftool")
        .args(["btf", "dump", "file"])
        .arg(path)
        .output()
        .expect("bpftool runs (scripts/dev.sh test installs Debian's bpftool)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Struct name -> its header line and members (`'name' type_id=.. bits_offset=..`
/// lines, with the type ids dropped: they differ between objects).
fn structs(btf: &str, prefix: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in btf.lines() {
        if let Some(rest) = line.split("] STRUCT '").nth(1) {
            let name = rest.split('\'').next().unwrap().to_string();
            current = name.starts_with(prefix).then(|| name.clone());
            if let Some(n) = &current {
                let size = rest.split_whitespace().find(|w| w.starts_with("size="));
                out.insert(n.clone(), vec![size.unwrap().to_string()]);
            }
        } else if line.starts_with('[') {
            current = None;
        } else if let Some(n) = &current {
            let member: Vec<&str> = line
                .split_whitespace()
                .filter(|w| !w.starts_with("type_id="))
                .collect();
            out.get_mut(n).unwrap().push(member.join(" "));
        }
    }
    out
}

#[test]
fn the_other_architectures_object_has_the_same_programs_maps_and_abi() {
    let (native, other) = objects();
    let (native_progs, native_maps) = contents(&native);
    let (other_progs, other_maps) = contents(&other);
    assert_eq!(other_progs, native_progs);
    assert_eq!(other_maps, native_maps);
    assert!(
        other_progs
            .iter()
            .any(|(n, s)| n == "trace_config_access_openat"
                && s == "tracepoint/syscalls/sys_exit_openat"),
        "{other_progs:?}"
    );
    let abi_native = structs(&btf(&native), "cac_");
    let abi_other = structs(&btf(&other), "cac_");
    assert!(abi_native.contains_key("cac_event"), "{abi_native:?}");
    assert_eq!(
        abi_other, abi_native,
        "the ABI header lays out alike on both"
    );
}

#[test]
fn syscall_arguments_come_from_each_architectures_registers() {
    let (native, other) = objects();
    let (x86, arm64) = match std::env::consts::ARCH {
        "aarch64" => (other, native),
        _ => (native, other),
    };
    // arm64: the first argument from orig_x0 (x0 holds the return value at
    // exit), the others from regs[]; x86_64: di, si, dx.
    let arm = btf(&arm64);
    let arm_regs = structs(&arm, "pt_regs___arm64");
    assert_eq!(
        arm_regs["pt_regs___arm64"][1..],
        ["'orig_x0' bits_offset=0"]
    );
    assert!(
        structs(&arm, "user_pt_regs").contains_key("user_pt_regs"),
        "{arm}"
    );
    assert!(!arm.contains("'di' "), "x86 registers in the arm64 object");
    let x = btf(&x86);
    let regs = &structs(&x, "pt_regs")["pt_regs"];
    for r in ["'di'", "'si'", "'dx'"] {
        assert!(regs.iter().any(|m| m.starts_with(r)), "{regs:?}");
    }
    assert!(
        !x.contains("orig_x0"),
        "arm64 registers in the x86_64 object"
    );
}
