//! The BPF programs on their own: ring-buffer accounting under overflow and the syscall sampler.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{privileged, POD};
use config_access_collector::demo::container::{ContainerProc, ExecArgs};
use config_access_collector::demo::sandbox::Sandbox;
use config_access_collector::enrich::volumes::{scan, VolumeRegistry};
use config_access_collector::kernel::decode::{decode_event, decode_sample};
use config_access_collector::kernel::maps::KernelDirs;
use config_access_collector::kernel::probe::{Probe, ProbeOptions, ProbeStorage};
use config_access_collector::model::volume::VolumeType;
use libbpf_rs::{MapCore, MapFlags, RingBufferBuilder};

/// A sandbox with one secret volume registered in `probe`'s maps.
fn watched_volume(probe: &Probe) -> (Sandbox, std::path::PathBuf, KernelDirs) {
    let mut sb = Sandbox::new().unwrap();
    let dir = sb
        .add_volume(POD, VolumeType::Secret, "flood", true)
        .unwrap();
    sb.write_atomic(&dir, &[("key", b"v", 0o644)]).unwrap();
    let mut kernel = probe.volume_maps().unwrap();
    let registry = Arc::new(VolumeRegistry::new());
    let changes = registry.apply(
        scan(&sb.kubelet_root(), &VolumeType::ALL).found,
        &[],
        &mut kernel,
    );
    assert_eq!(changes.added.len(), 1, "{changes:?}");
    (sb, dir, kernel)
}

#[test]
fn overflowing_the_ring_buffer_is_fully_accounted() {
    if !privileged("overflowing_the_ring_buffer_is_fully_accounted") {
        return;
    }
    // One page of ring: a couple of dozen records fit.
    let mut storage = ProbeStorage::uninit();

    let mut probe = Probe::load(
        &mut storage,
        &ProbeOptions {
            ring_bytes: 4096,
            sample_every: 0,
            wakeup_bytes: 4096,
            ..ProbeOptions::default()
        },
    )
    .unwrap();
    let (_sb, dir, _kernel) = watched_volume(&probe);
    const OPENS: u64 = 500;
    for _ in 0..OPENS {
        drop(std::fs::File::open(dir.join("key")).unwrap());
    }
    // Nothing new may arrive while counting.
    probe.detach();
    let stats = probe.stats_reader().unwrap().read().unwrap();
    assert!(stats.matched >= OPENS, "{stats:?}");
    assert!(
        stats.dropped_ringbuf > 0,
        "the ring should have overflowed: {stats:?}"
    );
    assert!(stats.delivered > 0, "{stats:?}");
    assert_eq!(
        stats.delivered + stats.dropped_ringbuf,
        stats.matched,
        "{stats:?}"
    );

    let ring = probe.events_map().unwrap();
    let mut records = 0u64;
    let mut decoded = 0u64;
    let mut b = RingBufferBuilder::new();
    b.add(&ring, |data: &[u8]| {
        records += 1;
        decoded += u64::from(decode_event(data).is_ok());
        0
    })
    .unwrap();
    let rb = b.build().unwrap();
    rb.consume().unwrap();
    drop(rb);
    assert_eq!(
        records, stats.delivered,
        "every delivered record is in the ring"
    );
    assert_eq!(decoded, records, "every record decodes");
}

#[test]
fn sampler_records_pid_to_cgroup() {
    if !privileged("sampler_records_pid_to_cgroup") {
        return;
    }
    let mut storage = ProbeStorage::uninit();

    let probe = Probe::load(
        &mut storage,
        &ProbeOptions {
            sample_every: 1,
            ..ProbeOptions::default()
        },
    )
    .unwrap();
    assert!(probe.attached_programs().contains(&"trace_pod_syscalls"));
    let mut sb = Sandbox::new().unwrap();
    let cg = sb
        .make_cgroup(&format!("kubepods/besteffort/pod{POD}/{}", "cd".repeat(32)))
        .unwrap();
    let cgroup_id = std::fs::metadata(&cg).unwrap().ino();
    let args = ExecArgs {
        cgroup: Some(cg),
        steps: vec![
            "sleep:20".into(),
            "open:/proc/self/stat".into(),
            "wait".into(),
        ],
        ..ExecArgs::default()
    };
    let mut p = ContainerProc::spawn(Path::new(common::EXE), &args).unwrap();
    p.next_result().unwrap();
    let samples = probe.pid_samples_map().unwrap();
    let value = samples
        .lookup(&p.pid.to_ne_bytes(), MapFlags::ANY)
        .unwrap()
        .expect("the process was sampled");
    let sample = decode_sample(&value).unwrap();
    assert_eq!(sample.cgroup_id, cgroup_id);
    assert_eq!(sample.tid, p.pid);
    p.finish().unwrap();
    assert!(probe.stats_reader().unwrap().read().unwrap().sampled > 0);

    let mut storage = ProbeStorage::uninit();

    let off = Probe::load(
        &mut storage,
        &ProbeOptions {
            sample_every: 0,
            ..ProbeOptions::default()
        },
    )
    .unwrap();
    assert!(
        !off.attached_programs().contains(&"trace_pod_syscalls"),
        "sampling rate 0 must not attach the sampler"
    );
    for lifecycle in ["inherit_container", "note_cgroup_move", "forget_process"] {
        assert!(
            off.attached_programs().contains(&lifecycle),
            "{lifecycle} keeps the correlation maps without the sampler"
        );
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(off.stats_reader().unwrap().read().unwrap().sampled, 0);
}
