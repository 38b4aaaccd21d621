//! Kubernetes pod metadata: a store keyed by pod UID, fed by a kube-rs watcher
//! on this node's pods.
//!
//! Only what enrichment needs is kept ([`PodMeta`]): names, a filtered subset
//! of labels, the owning workload, containers (name, image, runtime ids), the
//! service account, and for each volume the object it comes from (for
//! projected volumes every source with the items it projects). Deleted pods
//! stay resolvable for a grace period, so late events of short-lived pods
//! still attribute.

use std::sync::Arc;

mod convert;
mod interner;
mod meta;
mod store;
mod watch;

pub use interner::Interner;
pub use meta::{ContainerMeta, LabelFilter, PodMeta, VolumeMountMeta, VolumeSource};
pub use store::PodStore;
pub use watch::{client, watch_pods, WatchSettings};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum PodsError {
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
}

/// Whether pod metadata can be expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataStatus {
    /// A full list of the pods arrived.
    Synced,
    /// Waiting for the first full list.
    Waiting,
    /// No source (kube: off, or no API server configuration): never any metadata.
    Standalone,
}

/// Where pod metadata comes from: the Kubernetes API ([`PodStore`]), or
/// nowhere ([`NoMetadata`], standalone mode). Consumers ask this and never
/// which of the two it is.
pub trait PodMetadata: Send + Sync + std::fmt::Debug {
    /// The pod with this UID (live, or deleted less than the grace period ago).
    fn pod(&self, uid: &str) -> Option<Arc<PodMeta>>;
    /// Number of live pods.
    fn pods(&self) -> usize;
    /// Whether metadata is there, coming, or never coming.
    fn status(&self) -> MetadataStatus;
}

/// Standalone mode: no pod metadata, ever.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetadata;

impl PodMetadata for NoMetadata {
    fn pod(&self, _: &str) -> Option<Arc<PodMeta>> {
        None
    }
    fn pods(&self) -> usize {
        0
    }
    fn status(&self) -> MetadataStatus {
        MetadataStatus::Standalone
    }
}

impl PodMetadata for PodStore {
    fn pod(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.get(uid)
    }
    fn pods(&self) -> usize {
        self.len()
    }
    fn status(&self) -> MetadataStatus {
        if self.synced() {
            MetadataStatus::Synced
        } else if self.standalone() {
            MetadataStatus::Standalone
        } else {
            MetadataStatus::Waiting
        }
    }
}

#[cfg(test)]
mod tests {
    use super::convert::workload_of;
    use super::*;
    use crate::model::pod::{SourceKind, Workload};
    use k8s_openapi::api::core::v1::Pod;
    use std::time::Duration;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn sample() -> Pod {
        pod(serde_json::json!({
            "metadata": {
                "name": "api-7d9f8b6c5d-x2x9z", "namespace": "payments", "uid": "11111111-2222-3333-4444-555555555555",
                "labels": {"app": "api", "pod-template-hash": "7d9f8b6c5d", "team": "pay"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d9f8b6c5d", "uid": "r", "controller": true}]
            },
            "spec": {
                "serviceAccountName": "api",
                "containers": [{"name": "app", "image": "registry/app:1.2"}, {"name": "proxy", "image": "envoy:1.30"}],
                "volumes": [
                    {"name": "creds", "secret": {"secretName": "db-credentials"}},
                    {"name": "settings", "configMap": {"name": "app-settings", "items": [{"key": "config.yaml", "path": "app.yaml"}]}},
                    {"name": "kube-api-access-abcde", "projected": {"sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
                    ]}},
                    {"name": "bundle", "projected": {"sources": [
                        {"secret": {"name": "tls", "items": [{"key": "tls.crt", "path": "certs/server.crt"}]}},
                        {"configMap": {"name": "extra"}}
                    ]}},
                    {"name": "scratch", "emptyDir": {}}
                ]
            },
            "status": {"containerStatuses": [
                {"name": "app", "image": "registry/app:1.2", "imageID": "", "ready": true, "restartCount": 0,
                 "containerID": "containerd://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}
            ]}
        }))
    }

    #[test]
    fn strips_a_pod_to_what_enrichment_needs() {
        let m = PodMeta::from_pod(
            &sample(),
            &LabelFilter(vec!["app".into(), "team*".into()]),
            &Interner::default(),
        )
        .unwrap();
        assert_eq!(
            (&*m.name, &*m.namespace),
            ("api-7d9f8b6c5d-x2x9z", "payments")
        );
        let keys: Vec<&str> = m.labels.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys, ["app", "team"]);
        assert_eq!(m.label("team"), Some("pay"));
        assert_eq!(
            m.workload,
            Some(Workload {
                kind: "Deployment".into(),
                name: "api".into()
            })
        );
        assert_eq!(m.service_account.as_deref(), Some("api"));
        let app = m.container_by_id(&"a".repeat(64)).unwrap();
        assert_eq!((&*app.name, &*app.image), ("app", "registry/app:1.2"));
        assert_eq!(m.containers[1].id, None);
        assert!(m.volumes.iter().all(|(n, _)| &**n != "scratch"));
    }

    #[test]
    fn maps_files_to_their_objects() {
        let m =
            PodMeta::from_pod(&sample(), &LabelFilter::default(), &Interner::default()).unwrap();
        let s = m.source_of("creds", "password").unwrap();
        assert_eq!(
            (s.kind, s.name.as_deref(), s.key.as_deref()),
            (SourceKind::Secret, Some("db-credentials"), Some("password"))
        );
        let s = m.source_of("settings", "app.yaml").unwrap();
        assert_eq!(
            (s.kind, s.name.as_deref(), s.key.as_deref()),
            (
                SourceKind::ConfigMap,
                Some("app-settings"),
                Some("config.yaml")
            )
        );
        assert_eq!(
            m.source_of("settings", "other").map(|s| s.kind),
            None,
            "items limit a ConfigMap volume to their paths"
        );
        let t = m.source_of("kube-api-access-abcde", "token").unwrap();
        assert_eq!(
            (t.kind, t.name.as_deref()),
            (SourceKind::ServiceAccountToken, None)
        );
        let ca = m.source_of("kube-api-access-abcde", "ca.crt").unwrap();
        assert_eq!(
            (ca.kind, ca.name.as_deref()),
            (SourceKind::ConfigMap, Some("kube-root-ca.crt"))
        );
        let ns = m.source_of("kube-api-access-abcde", "namespace").unwrap();
        assert_eq!(ns.kind, SourceKind::DownwardApi);
        let crt = m.source_of("bundle", "certs/server.crt").unwrap();
        assert_eq!(
            (crt.name.as_deref(), crt.key.as_deref()),
            (Some("tls"), Some("tls.crt"))
        );
        let extra = m.source_of("bundle", "anything").unwrap();
        assert_eq!(
            (extra.kind, extra.name.as_deref()),
            (SourceKind::ConfigMap, Some("extra"))
        );
    }

    #[test]
    fn workloads_from_owners() {
        let with_owner = |kind: &str, name: &str| {
            pod(
                serde_json::json!({"metadata": {"uid": "u", "name": "p", "ownerReferences": [{"apiVersion": "v1", "kind": kind, "name": name, "uid": "o", "controller": true}]}}),
            )
        };
        let names = Interner::default();
        let w = |p: &Pod| workload_of(p, &names).map(|w| (w.kind.to_string(), w.name.to_string()));
        assert_eq!(
            w(&with_owner("StatefulSet", "db")),
            Some(("StatefulSet".into(), "db".into()))
        );
        assert_eq!(
            w(&with_owner("Job", "backup-28934410")),
            Some(("CronJob".into(), "backup".into()))
        );
        assert_eq!(
            w(&with_owner("Job", "migrate")),
            Some(("Job".into(), "migrate".into()))
        );
        assert_eq!(
            w(&with_owner("ReplicaSet", "bare-rs")),
            Some(("ReplicaSet".into(), "bare-rs".into()))
        );
        assert_eq!(w(&pod(serde_json::json!({"metadata": {"uid": "u"}}))), None);
    }

    #[test]
    fn deleted_pods_stay_for_the_grace_period() {
        let store = PodStore::new(Duration::from_millis(200));
        let m =
            PodMeta::from_pod(&sample(), &LabelFilter::default(), &Interner::default()).unwrap();
        let uid = m.uid.clone();
        store.apply(m);
        store.delete(&uid);
        assert!(store.get(&uid).is_some(), "resolvable right after deletion");
        assert_eq!(store.len(), 0);
        std::thread::sleep(Duration::from_millis(250));
        assert!(store.get(&uid).is_none());
        store.purge();

        // A relist that no longer lists a pod deletes it.
        store.apply(
            PodMeta::from_pod(&sample(), &LabelFilter::default(), &Interner::default()).unwrap(),
        );
        store.begin_relist();
        store.end_relist();
        assert_eq!(store.len(), 0);
        assert!(store.get(&uid).is_some());
        assert!(store.synced());
    }

    #[test]
    fn interned_strings_of_departed_pods_are_swept() {
        let store = PodStore::new(Duration::ZERO);
        let churn = |n: usize| {
            for i in 0..n {
                let mut p = sample();
                p.metadata.uid = Some(format!("uid-{i}"));
                p.metadata.name = Some(format!("pod-{i}"));
                store.apply(PodMeta::from_pod(&p, &LabelFilter::default(), store.names()).unwrap());
            }
            for i in 0..n {
                store.delete(&format!("uid-{i}"));
            }
            store.purge();
        };
        churn(1);
        let baseline = store.names().len();
        churn(500);
        assert_eq!(store.len(), 0);
        assert_eq!(
            store.names().len(),
            baseline,
            "the UIDs of 500 departed pods are still interned"
        );
    }
}
