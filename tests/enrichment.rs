//! End to end with the real BPF programs and a fake API server: a process in
//! a pod-like cgroup reads through bind mounts, and the events name the pod,
//! the container and the real Secret/ConfigMap objects.

mod common;

use std::path::Path;

use common::fake_apiserver::{demo_pod, start_blocking};
use common::{exactly_one, pod_cgroup, privileged, wait, Harness, POD};
use config_access_collector::demo::container::ContainerProc;
use config_access_collector::model::pod::SourceKind;

const CID: &str = "5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d";

#[test]
fn events_name_pod_container_and_real_objects() {
    if !privileged("events_name_pod_container_and_real_objects") {
        return;
    }
    let (mut h, api, _rt) = Harness::with_fake_api(CID, |c| c.node_name = Some("node-a".into()));
    let store = h.collector().pods().expect("kube mode").clone();
    let cg = h.sb.make_cgroup(&pod_cgroup("burstable", CID)).unwrap();
    let mut args = h.container(&[
        "open:/etc/db/password",
        "open:/etc/config/app.yaml",
        "open:/var/run/secrets/kubernetes.io/serviceaccount/token",
        "open:/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
    ]);
    args.cgroup = Some(cg);
    let (pid, results) = h.run(&args);
    assert!(results.iter().all(|r| r.1 == "ok"), "{results:?}");
    let evs = h.events_of(pid);
    assert_eq!(evs.len(), 4, "{evs:#?}");
    let by_key = |k: &str| {
        evs.iter()
            .find(|e| e.key.as_deref() == Some(k))
            .unwrap_or_else(|| panic!("no event for {k}: {evs:#?}"))
    };

    let pw = by_key("password");
    let json: serde_json::Value = serde_json::to_value(pw).unwrap();
    assert_eq!(json["namespace"], "payments");
    assert_eq!(json["pod_name"], "payments-api-0");
    assert_eq!(json["config_name"], "db-credentials");
    assert_eq!(json["container"]["name"], "app");
    assert_eq!(json["source"]["kind"], "Secret");
    assert_eq!(
        (pw.namespace.as_deref(), pw.pod_name.as_deref()),
        (Some("payments"), Some("payments-api-0"))
    );
    assert_eq!(pw.volume_name.as_deref(), Some("db-creds"));
    assert_eq!(
        pw.config_name.as_deref(),
        Some("db-credentials"),
        "the Secret's name, not the volume's"
    );
    let c = pw.container.as_ref().expect("container");
    assert_eq!(
        (c.id.as_str(), c.name.as_deref(), c.image.as_deref()),
        (CID, Some("app"), Some("registry.example/app:1.0"))
    );
    assert_eq!(pw.reader_pod_uid.as_deref(), Some(POD));
    assert_eq!(
        pw.workload.as_ref().map(|w| (&*w.kind, &*w.name)),
        Some(("StatefulSet", "payments-api-0"))
    );
    assert_eq!(pw.service_account.as_deref(), Some("default"));
    assert_eq!(
        pw.labels.get("app").map(String::as_str),
        Some("payments-api-0")
    );
    assert!(!pw.service_account_token);

    let cfg = by_key("app.yaml");
    assert_eq!(cfg.config_name.as_deref(), Some("app-settings"));
    let src = cfg.source.as_ref().unwrap();
    assert_eq!(
        (src.kind, src.key.as_deref()),
        (SourceKind::ConfigMap, Some("config.yaml")),
        "items[].path remapping is undone"
    );

    let token = by_key("token");
    assert!(token.service_account_token);
    assert_eq!(
        token.source.as_ref().map(|s| s.kind),
        Some(SourceKind::ServiceAccountToken)
    );
    assert_eq!(
        token.config_name.as_deref(),
        Some("kube-api-access-x7k2p"),
        "a token has no object name"
    );

    let ca = by_key("ca.crt");
    assert_eq!(ca.config_name.as_deref(), Some("kube-root-ca.crt"));
    let src = ca.source.as_ref().unwrap();
    assert_eq!(
        (src.kind, src.key.as_deref()),
        (SourceKind::ConfigMap, Some("root-ca.pem")),
        "projected items remapping is undone"
    );
    assert_eq!(
        pw.process.cgroup_path.as_deref(),
        Some(format!("/{}", pod_cgroup("burstable", CID)).as_str())
    );
    assert_eq!(ca.event_type, "projected_access");

    // A pod deleted a moment before its event is processed still attributes.
    let mut p = ContainerProc::spawn(
        Path::new(common::EXE),
        &h.container(&["wait", "open:/etc/db/username"]),
    )
    .unwrap();
    api.delete(POD);
    wait("pod deletion seen", || store.is_empty());
    p.release();
    assert_eq!(p.next_result().unwrap().1, "ok");
    let pid = p.pid;
    p.finish().unwrap();
    let ev = exactly_one(h.events_of(pid), "after deletion");
    assert_eq!(ev.pod_name.as_deref(), Some("payments-api-0"));
    assert_eq!(ev.config_name.as_deref(), Some("db-credentials"));
}

#[test]
fn standalone_until_the_api_server_comes_up() {
    if !privileged("standalone_until_the_api_server_comes_up") {
        return;
    }
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut h = Harness::start_with(|c| c.kube_api_url = Some(format!("http://{addr}")));
    let (pid, _) = h.run(&h.container(&["open:/etc/db/password"]));
    let ev = exactly_one(h.events_of(pid), "standalone");
    assert_eq!(
        ev.pod_uid.as_deref(),
        Some(POD),
        "the pod UID comes from the volume path"
    );
    assert!(ev.namespace.is_none() && ev.pod_name.is_none());
    assert_eq!(
        ev.config_name.as_deref(),
        Some("db-creds"),
        "the volume name stands in for the object"
    );

    let (api, _rt) = start_blocking(addr);
    api.add(demo_pod(POD, CID));
    let store = h.collector().pods().unwrap().clone();
    wait("pod metadata once the API server is up", || {
        store.get(POD).is_some()
    });
    let (pid, _) = h.run(&h.container(&["open:/etc/db/password"]));
    let ev = exactly_one(h.events_of(pid), "after the API server came up");
    assert_eq!(ev.pod_name.as_deref(), Some("payments-api-0"));
    assert_eq!(ev.config_name.as_deref(), Some("db-credentials"));
}

#[test]
fn no_kube_mode_never_contacts_the_api() {
    if !privileged("no_kube_mode_never_contacts_the_api") {
        return;
    }
    let (api, _rt) = start_blocking("127.0.0.1:0".parse().unwrap());
    api.add(demo_pod(POD, CID));
    let url = api.url();
    let mut h = Harness::start_with(|c| {
        c.kube = config_access_collector::config::KubeMode::Off;
        c.kube_api_url = Some(url);
    });
    assert!(h.collector().pods().is_none());
    let (pid, _) = h.run(&h.container(&["open:/etc/db/password"]));
    let ev = exactly_one(h.events_of(pid), "no-kube");
    assert!(ev.pod_name.is_none());
    assert!(
        api.requests().is_empty(),
        "kube: off must not talk to the API server"
    );
}
