//! `demo`: the whole pipeline on a kubelet-like sandbox, for machines without a kubelet.
//!
//! Builds a pod with a tmpfs Secret volume, an AtomicWriter ConfigMap volume
//! and a projected service-account token volume, starts the collector on it,
//! then runs a "container" (its own mount namespace, bind mounts at container
//! paths, a pod-like cgroup) that opens files the way applications do. The
//! pod's metadata is given to the pipeline as the kube watcher would give it,
//! so events carry names. Midway the kubelet updates the Secret (a `..data`
//! swap): the app re-reads its password, a cache warmer does not. Prints
//! every event, fails when an expected one does not arrive, and ends with
//! the pod's usage report (on stderr): keys read and never read, and the
//! stale reader.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::Collector;
use crate::config::Config;
use crate::enrich::pods::{Interner, LabelFilter, PodMeta, PodStore};
use crate::model::event::AccessEvent;
use crate::model::volume::VolumeType;
use container::{ContainerProc, ExecArgs};
use sandbox::Sandbox;

pub mod container;
pub mod sandbox;

/// The demo pod's UID.
pub const POD_UID: &str = "d3a0c0de-0000-4000-8000-00000000cafe";
/// Container id of the demo container.
pub const CONTAINER_ID: &str = "0d3e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70";

/// An event the demo waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub event_type: &'static str,
    pub volume_name: &'static str,
    pub key: &'static str,
    pub path: &'static str,
    pub result: &'static str,
}

/// The demo pod's cgroup, relative to the cgroup2 mount (systemd driver, containerd).
pub fn pod_cgroup() -> String {
    let uid = POD_UID.replace('-', "_");
    format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/cri-containerd-{CONTAINER_ID}.scope"
    )
}

/// Host directories of the demo pod's volumes.
#[derive(Debug, Clone)]
pub struct PodVolumes {
    /// tmpfs Secret volume `db-creds` (username, password, api-key readable by root only).
    pub secret: PathBuf,
    /// disk-backed ConfigMap volume `app-config` (app.yaml).
    pub config: PathBuf,
    /// tmpfs projected volume `kube-api-access-x7k2p` (token, ca.crt, namespace).
    pub token: PathBuf,
}

impl PodVolumes {
    /// A container of the pod: its own mount namespace, the volumes bound at
    /// their usual container paths (`/etc/db`, `/etc/config`, the service-account
    /// directory), chrooted into `root`.
    pub fn container(&self, root: &Path, steps: &[&str]) -> ExecArgs {
        ExecArgs {
            unshare_mount: true,
            binds: vec![
                format!("{}:/etc/db", self.secret.display()),
                format!("{}:/etc/config", self.config.display()),
                format!(
                    "{}:/var/run/secrets/kubernetes.io/serviceaccount",
                    self.token.display()
                ),
            ],
            chroot: Some(root.to_path_buf()),
            steps: steps.iter().map(|s| s.to_string()).collect(),
            ..ExecArgs::default()
        }
    }
}

/// How long the demo watches its volumes before it reports the unread keys.
const UNUSED_AFTER: Duration = Duration::from_millis(1500);

/// The sandbox pod as the API server would serve it: a StatefulSet's pod
/// in namespace `demo` whose volumes come from a Secret, a ConfigMap (one
/// key remapped by `items`) and a projected service-account token.
fn sandbox_pod() -> PodMeta {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "payments-api-0", "namespace": "demo", "uid": POD_UID,
            "labels": {"app": "payments-api"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                "name": "payments-api", "uid": "owner", "controller": true}]},
        "spec": {"serviceAccountName": "payments",
            "containers": [{"name": "app", "image": "registry.example/payments:1.0"}],
            "volumes": [
                {"name": "db-creds", "secret": {"secretName": "db-credentials"}},
                {"name": "app-config", "configMap": {"name": "app-settings",
                    "items": [{"key": "config.yaml", "path": "app.yaml"}]}},
                {"name": "kube-api-access-x7k2p", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace",
                        "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "app",
            "image": "registry.example/payments:1.0", "imageID": "", "ready": true,
            "restartCount": 0, "containerID": format!("containerd://{CONTAINER_ID}")}]}
    }))
    .expect("the sandbox pod is a Pod");
    PodMeta::from_pod(&pod, &LabelFilter(vec!["app".into()]), &Interner::default())
        .expect("the sandbox pod has a UID")
}

/// Builds the demo pod's volumes in `sb`.
pub fn build_pod(sb: &mut Sandbox) -> std::io::Result<PodVolumes> {
    let secret = sb.add_volume(POD_UID, VolumeType::Secret, "db-creds", true)?;
    sb.write_atomic(
        &secret,
        &[
            ("username", b"app", 0o644),
            ("password", b"s3cret", 0o644),
            ("api-key", b"k", 0o600),
        ],
    )?;
    let config = sb.add_volume(POD_UID, VolumeType::ConfigMap, "app-config", false)?;
    sb.write_atomic(&config, &[("app.yaml", b"level: info\n", 0o644)])?;
    let token = sb.add_volume(
        POD_UID,
        VolumeType::Projected,
        "kube-api-access-x7k2p",
        true,
    )?;
    sb.write_atomic(
        &token,
        &[
            ("token", b"eyJ", 0o644),
            ("ca.crt", b"-----", 0o644),
            ("namespace", b"demo", 0o644),
        ],
    )?;
    Ok(PodVolumes {
        secret,
        config,
        token,
    })
}

fn matches(ev: &AccessEvent, pid: u32, want: &Expected) -> bool {
    ev.process.pid == pid
        && ev.event_type == want.event_type
        && ev.volume_name.as_deref() == Some(want.volume_name)
        && ev.key.as_deref() == Some(want.key)
        && ev.path.as_deref() == Some(want.path)
        && ev.result == want.result
}

/// The sandbox's processes: the app (it re-reads its password after the
/// rotation), a cache warmer of the same container that reads the password
/// once and never again, and an intruder running as nobody.
struct Processes {
    app: ExecArgs,
    warmer: ExecArgs,
    nobody: ExecArgs,
}

fn containers(sb: &Sandbox, pod: &PodVolumes, cgroup: PathBuf) -> Processes {
    let app = ExecArgs {
        cgroup: Some(cgroup.clone()),
        comm: Some("app-server".into()),
        ..pod.container(
            &sb.container_root(),
            &[
                "open:/etc/db/password",
                "chdir:/etc/config",
                "open:app.yaml",
                "open:/var/run/secrets/kubernetes.io/serviceaccount/token",
                "wait",
                "open:/etc/db/password",
                "wait",
            ],
        )
    };
    let warmer = ExecArgs {
        cgroup: Some(cgroup.clone()),
        comm: Some("cache-warmer".into()),
        ..pod.container(&sb.container_root(), &["open:/etc/db/password", "wait"])
    };
    let nobody = ExecArgs {
        cgroup: Some(cgroup),
        uid: Some(65534),
        comm: Some("intruder".into()),
        ..pod.container(&sb.container_root(), &["open:/etc/db/api-key", "wait"])
    };
    Processes {
        app,
        warmer,
        nobody,
    }
}

/// The kubelet updates Secret `db-credentials`: the volume's `..data` is
/// swapped to a new revision. Waits until the ledger saw it (at most 5 s).
fn rotate_secret(
    sb: &mut Sandbox,
    pod: &PodVolumes,
    usage: &crate::usage::Usage,
) -> std::io::Result<()> {
    sb.write_atomic(
        &pod.secret,
        &[
            ("username", b"app", 0o644),
            ("password", b"r0tated", 0o644),
            ("api-key", b"k", 0o600),
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if usage
            .rotations()
            .volumes
            .iter()
            .any(|v| v.mount.volume == "db-creds")
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(std::io::Error::other(
        "the rotation of db-creds was not seen",
    ))
}

/// What the app container's opens must produce.
const EXPECTED_APP: [Expected; 3] = [
    Expected {
        event_type: "secret_access",
        volume_name: "db-creds",
        key: "password",
        path: "/etc/db/password",
        result: "ok",
    },
    Expected {
        event_type: "configmap_access",
        volume_name: "app-config",
        key: "app.yaml",
        path: "app.yaml",
        result: "ok",
    },
    Expected {
        event_type: "projected_access",
        volume_name: "kube-api-access-x7k2p",
        key: "token",
        path: "/var/run/secrets/kubernetes.io/serviceaccount/token",
        result: "ok",
    },
];

/// What the intruder's denied open must produce.
const EXPECTED_NOBODY: [Expected; 1] = [Expected {
    event_type: "secret_access",
    volume_name: "db-creds",
    key: "api-key",
    path: "/etc/db/api-key",
    result: "EACCES",
}];

fn print_event(ev: &AccessEvent) {
    if let Ok(line) = serde_json::to_string(ev) {
        println!("{line}");
    }
}

/// Prints events until every `pending` one arrived or 10 s passed; returns what is still missing.
fn await_events<'a>(
    events: &Receiver<Arc<AccessEvent>>,
    mut pending: Vec<(u32, &'a Expected)>,
) -> Vec<(u32, &'a Expected)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pending.is_empty() && Instant::now() < deadline {
        let Ok(ev) = events.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        print_event(&ev);
        pending.retain(|(pid, want)| !matches(&ev, *pid, want));
    }
    pending
}

/// Runs the demo; returns the process exit code.
pub fn run(exe: &Path) -> crate::Result<i32> {
    let mut sb = Sandbox::new().map_err(crate::Error::Demo)?;
    let pod = build_pod(&mut sb).map_err(crate::Error::Demo)?;
    let cgroup = sb.make_cgroup(&pod_cgroup()).map_err(crate::Error::Demo)?;
    // The sandbox has no API server: its pod's metadata goes to the pipeline
    // the way the kube watcher would put it, so events carry real names.
    let pods = Arc::new(PodStore::new(Duration::from_secs(60)));
    pods.apply(sandbox_pod());
    let cfg = Config {
        kubelet_root: sb.kubelet_root(),
        flush_interval_ms: 20,
        kube: crate::config::KubeMode::Off,
        health_listen: "off".into(),
        api_socket: "off".into(),
        unused_after: format!("{}ms", UNUSED_AFTER.as_millis()),
        ..Config::default()
    };
    let (collector, events) = Collector::start_with_pods(&cfg, pods)?;
    // The volumes are watched from here on.
    let started = Instant::now();
    let procs = containers(&sb, &pod, cgroup);
    let mut p1 = ContainerProc::spawn(exe, &procs.app).map_err(crate::Error::Demo)?;
    let mut p2 = ContainerProc::spawn(exe, &procs.nobody).map_err(crate::Error::Demo)?;
    let mut p3 = ContainerProc::spawn(exe, &procs.warmer).map_err(crate::Error::Demo)?;
    let expected: Vec<(u32, &Expected)> = EXPECTED_APP
        .iter()
        .map(|e| (p1.pid, e))
        .chain(EXPECTED_NOBODY.iter().map(|e| (p2.pid, e)))
        .chain([(p3.pid, &EXPECTED_APP[0])])
        .collect();
    let mut total = expected.len();
    let mut missing = await_events(&events, expected);
    // The Secret is updated; the app re-reads its password, the warmer does not.
    rotate_secret(&mut sb, &pod, collector.usage()).map_err(crate::Error::Demo)?;
    p1.release();
    total += 1;
    missing.extend(await_events(&events, vec![(p1.pid, &EXPECTED_APP[0])]));
    // What the sandbox pod mounts and never read (on stderr: stdout is JSON lines).
    let watched = UNUSED_AFTER + Duration::from_millis(300);
    std::thread::sleep(watched.saturating_sub(started.elapsed()));
    eprintln!(
        "\ndemo: usage of the sandbox pod's volumes (config-access-collector report):\n{}",
        crate::usage::report::render(&collector.usage().report())
    );
    for p in [&mut p1, &mut p2, &mut p3] {
        p.release();
    }
    for p in [p1, p2, p3] {
        let _ = p.finish();
    }
    let stats = collector.stop();
    while let Ok(ev) = events.try_recv() {
        print_event(&ev);
    }
    drop(sb);
    tracing::info!(?stats, "demo finished");
    if missing.is_empty() {
        eprintln!("demo: all {total} expected accesses were reported");
        Ok(0)
    } else {
        for (pid, want) in &missing {
            eprintln!("demo: MISSING event for pid {pid}: {want:?}");
        }
        Ok(1)
    }
}
