//! Kubernetes pod metadata: a store keyed by pod UID, fed by a kube-rs watcher
//! on this node's pods.
//!
//! Only what enrichment needs is kept ([`PodMeta`]): names, a filtered subset
//! of labels, the owning workload, containers (name, image, runtime ids), the
//! service account, and for each volume the object it comes from (for
//! projected volumes every source with the items it projects). Deleted pods
//! stay resolvable for a grace period, so late events of short-lived pods
//! still attribute.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum PodsError {
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
}

/// A shared, immutable string: names repeated across pods (namespaces,
/// images, object and volume names, label keys and values) are stored once.
pub type Name = Arc<str>;

/// Interns the strings pods repeat, so 10,000 replicas of a handful of
/// workloads cost little more than their UIDs and names.
#[derive(Debug, Default)]
pub struct Interner {
    set: std::sync::Mutex<std::collections::HashSet<Name>>,
}

impl Interner {
    /// The shared copy of `s`.
    pub fn get(&self, s: &str) -> Name {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = set.get(s) {
            return Arc::clone(n);
        }
        let n: Name = Arc::from(s);
        set.insert(Arc::clone(&n));
        n
    }

    /// Drops strings no pod uses any more.
    pub fn sweep(&self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|n| Arc::strong_count(n) > 1);
    }

    /// Number of distinct strings held.
    pub fn len(&self) -> usize {
        self.set.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The workload that owns a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `CronJob`, `ReplicaSet`, ...
    pub kind: Name,
    pub name: Name,
}

/// A container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerMeta {
    pub name: Name,
    pub image: Name,
    /// Runtime container id (64 hex digits, without the `containerd://` scheme), once running.
    pub id: Option<Box<str>>,
    /// Where the container mounts the pod's watched volumes.
    pub mounts: Box<[VolumeMountMeta]>,
}

/// A container's mount of a watched volume (`spec.containers[].volumeMounts[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeMountMeta {
    /// Path inside the container.
    pub path: Box<str>,
    /// The pod's volume name.
    pub volume: Name,
    /// Path inside the volume mounted there (`subPath`); `None`: the whole volume.
    pub sub_path: Option<Box<str>>,
}

/// The mounts of watched volumes among `mounts`; `subPathExpr` mounts are
/// left out (their path depends on the environment of the container).
fn watched_mounts(
    mounts: Option<&Vec<k8s_openapi::api::core::v1::VolumeMount>>,
    watched: &[Name],
    names: &Interner,
) -> Box<[VolumeMountMeta]> {
    mounts
        .into_iter()
        .flatten()
        .filter(|m| m.sub_path_expr.as_deref().unwrap_or_default().is_empty())
        .filter(|m| watched.iter().any(|w| **w == *m.name))
        .map(|m| VolumeMountMeta {
            path: m.mount_path.trim_end_matches('/').into(),
            volume: names.get(&m.name),
            sub_path: m
                .sub_path
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(Box::from),
        })
        .collect()
}

/// Kind of object a file of a volume comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum SourceKind {
    Secret,
    ConfigMap,
    ServiceAccountToken,
    #[serde(rename = "DownwardAPI")]
    DownwardApi,
    ClusterTrustBundle,
}

/// One source of a projected volume (or the single source of a plain one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSource {
    pub kind: SourceKind,
    /// Object name (Secret/ConfigMap/ClusterTrustBundle); `None` for tokens and downward API.
    pub name: Option<Name>,
    /// `(key in the object, path in the volume)`; empty: every key under its own name.
    pub items: Box<[(Name, Name)]>,
}

impl VolumeSource {
    /// The object key behind volume path `key`, if this source projects it.
    fn key_for(&self, key: &str) -> Option<&Name> {
        self.items
            .iter()
            .find(|(_, path)| path.trim_start_matches("./") == key)
            .map(|(k, _)| k)
    }
}

/// Where a volume file comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FileSource {
    pub kind: SourceKind,
    /// Object name, when the source is an object.
    pub name: Option<Name>,
    /// Key inside the object (differs from the file name when `items[].path` remaps it).
    pub key: Option<Name>,
}

/// What enrichment needs to know about a pod, in compact form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: Name,
    pub name: Box<str>,
    pub namespace: Name,
    /// The configured subset of the pod's labels, sorted by key.
    pub labels: Box<[(Name, Name)]>,
    pub workload: Option<Workload>,
    pub service_account: Option<Name>,
    pub containers: Box<[ContainerMeta]>,
    /// Volume name and its sources (one for Secret/ConfigMap/downward API volumes).
    pub volumes: Box<[(Name, Box<[VolumeSource]>)]>,
}

/// Which labels to keep: exact keys, or prefixes ending in `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelFilter(pub Vec<String>);

impl LabelFilter {
    pub fn keeps(&self, key: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => p == key,
        })
    }
}

fn strip_scheme(id: &str) -> &str {
    id.split_once("://").map(|(_, i)| i).unwrap_or(id)
}

/// The workload of a pod from its controller owner reference.
fn workload_of(pod: &Pod, names: &Interner) -> Option<Workload> {
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    let (kind, name) = match (owner.kind.as_str(), hash) {
        // A Deployment's ReplicaSet is named <deployment>-<pod-template-hash>.
        ("ReplicaSet", Some(h)) => match owner.name.strip_suffix(&format!("-{h}")) {
            Some(d) => ("Deployment", d),
            None => ("ReplicaSet", owner.name.as_str()),
        },
        // A CronJob's Job is named <cronjob>-<scheduled time in minutes>.
        ("Job", _) => match owner.name.rsplit_once('-') {
            Some((cj, t)) if t.len() >= 8 && t.bytes().all(|b| b.is_ascii_digit()) => {
                ("CronJob", cj)
            }
            _ => ("Job", owner.name.as_str()),
        },
        (k, _) => (k, owner.name.as_str()),
    };
    Some(Workload {
        kind: names.get(kind),
        name: names.get(name),
    })
}

/// Builds sources with interned strings.
struct Sources<'a>(&'a Interner);

impl Sources<'_> {
    fn items(
        &self,
        list: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    ) -> Box<[(Name, Name)]> {
        list.iter()
            .flat_map(|l| l.iter())
            .map(|i| (self.0.get(&i.key), self.0.get(&i.path)))
            .collect()
    }

    fn paths<'p>(&self, paths: impl Iterator<Item = &'p str>) -> Box<[(Name, Name)]> {
        paths
            .map(|p| {
                let n = self.0.get(p);
                (Arc::clone(&n), n)
            })
            .collect()
    }

    fn source(
        &self,
        kind: SourceKind,
        name: Option<&str>,
        items: Box<[(Name, Name)]>,
    ) -> VolumeSource {
        VolumeSource {
            kind,
            name: name.map(|n| self.0.get(n)),
            items,
        }
    }

    fn projected(&self, p: &k8s_openapi::api::core::v1::VolumeProjection) -> Option<VolumeSource> {
        if let Some(s) = &p.secret {
            return Some(self.source(
                SourceKind::Secret,
                Some(&s.name),
                self.items(s.items.as_ref()),
            ));
        }
        if let Some(c) = &p.config_map {
            return Some(self.source(
                SourceKind::ConfigMap,
                Some(&c.name),
                self.items(c.items.as_ref()),
            ));
        }
        if let Some(t) = &p.service_account_token {
            let items = self.paths(std::iter::once(t.path.as_str()));
            return Some(self.source(SourceKind::ServiceAccountToken, None, items));
        }
        if let Some(d) = &p.downward_api {
            let items = self.paths(d.items.iter().flatten().map(|i| i.path.as_str()));
            return Some(self.source(SourceKind::DownwardApi, None, items));
        }
        if let Some(b) = &p.cluster_trust_bundle {
            let name = b.name.as_deref().or(b.signer_name.as_deref());
            let items = self.paths(std::iter::once(b.path.as_str()));
            return Some(self.source(SourceKind::ClusterTrustBundle, name, items));
        }
        None
    }

    fn volume(&self, v: &k8s_openapi::api::core::v1::Volume) -> Option<Box<[VolumeSource]>> {
        let one = |s: VolumeSource| Some(vec![s].into_boxed_slice());
        if let Some(s) = &v.secret {
            return one(self.source(
                SourceKind::Secret,
                s.secret_name.as_deref(),
                self.items(s.items.as_ref()),
            ));
        }
        if let Some(c) = &v.config_map {
            return one(self.source(
                SourceKind::ConfigMap,
                Some(&c.name),
                self.items(c.items.as_ref()),
            ));
        }
        if let Some(d) = &v.downward_api {
            let items = self.paths(d.items.iter().flatten().map(|i| i.path.as_str()));
            return one(self.source(SourceKind::DownwardApi, None, items));
        }
        let p = v.projected.as_ref()?;
        Some(
            p.sources
                .iter()
                .flatten()
                .filter_map(|s| self.projected(s))
                .collect(),
        )
    }
}

impl PodMeta {
    /// Strips a Pod down to what enrichment needs. `None` without a UID.
    pub fn from_pod(pod: &Pod, labels: &LabelFilter, names: &Interner) -> Option<Self> {
        let md = &pod.metadata;
        let uid = names.get(md.uid.as_deref()?);
        let spec = pod.spec.as_ref();
        let ids: HashMap<&str, &str> = pod
            .status
            .iter()
            .flat_map(|s| {
                [
                    &s.container_statuses,
                    &s.init_container_statuses,
                    &s.ephemeral_container_statuses,
                ]
                .into_iter()
                .flatten()
                .flatten()
            })
            .filter_map(|c| Some((c.name.as_str(), strip_scheme(c.container_id.as_deref()?))))
            .collect();
        let sources = Sources(names);
        let volumes: Box<[_]> = spec
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|v| Some((names.get(&v.name), sources.volume(v)?)))
            .collect();
        let watched: Vec<Name> = volumes.iter().map(|(n, _)| Arc::clone(n)).collect();
        let mut containers = Vec::new();
        if let Some(spec) = spec {
            let regular = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .map(|c| {
                    (
                        c.name.as_str(),
                        c.image.as_deref(),
                        c.volume_mounts.as_ref(),
                    )
                });
            let ephemeral = spec.ephemeral_containers.iter().flatten().map(|c| {
                (
                    c.name.as_str(),
                    c.image.as_deref(),
                    c.volume_mounts.as_ref(),
                )
            });
            for (name, image, mounts) in regular.chain(ephemeral) {
                containers.push(ContainerMeta {
                    name: names.get(name),
                    image: names.get(image.unwrap_or_default()),
                    id: ids.get(name).map(|id| Box::from(*id)),
                    mounts: watched_mounts(mounts, &watched, names),
                });
            }
        }
        Some(Self {
            uid,
            name: md.name.as_deref().unwrap_or_default().into(),
            namespace: names.get(md.namespace.as_deref().unwrap_or_default()),
            labels: md
                .labels
                .iter()
                .flatten()
                .filter(|(k, _)| labels.keeps(k))
                .map(|(k, v)| (names.get(k), names.get(v)))
                .collect(),
            workload: workload_of(pod, names),
            service_account: spec
                .and_then(|s| s.service_account_name.as_deref())
                .map(|s| names.get(s)),
            containers: containers.into_boxed_slice(),
            volumes,
        })
    }

    /// The container with this runtime id.
    pub fn container_by_id(&self, id: &str) -> Option<&ContainerMeta> {
        self.containers.iter().find(|c| c.id.as_deref() == Some(id))
    }

    /// The value of label `key`, if kept.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    /// The object behind file `key` of volume `volume`.
    ///
    /// Sources with `items` are matched by path; a source without items
    /// projects every key of its object under its own name, so the key goes
    /// to the only such source (ambiguous with several: the first, as
    /// Kubernetes rejects colliding paths only at runtime).
    pub fn source_of(&self, volume: &str, key: &str) -> Option<FileSource> {
        let (_, sources) = self.volumes.iter().find(|(n, _)| &**n == volume)?;
        if let Some((s, k)) = sources.iter().find_map(|s| s.key_for(key).map(|k| (s, k))) {
            return Some(FileSource {
                kind: s.kind,
                name: s.name.clone(),
                key: (s.kind != SourceKind::ServiceAccountToken).then(|| Arc::clone(k)),
            });
        }
        let s = sources.iter().find(|s| {
            s.items.is_empty() && matches!(s.kind, SourceKind::Secret | SourceKind::ConfigMap)
        })?;
        Some(FileSource {
            kind: s.kind,
            name: s.name.clone(),
            key: Some(Arc::from(key)),
        })
    }
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<Name, Arc<PodMeta>>,
    /// Deleted pods, with the time they were deleted.
    deleted: HashMap<Name, (Arc<PodMeta>, Instant)>,
    /// Pods seen since the watcher's last `Init`.
    relist: Option<HashMap<Name, Arc<PodMeta>>>,
}

/// Pod metadata by UID.
#[derive(Debug)]
pub struct PodStore {
    inner: RwLock<Inner>,
    grace: Duration,
    synced: AtomicBool,
    standalone: AtomicBool,
    names: Interner,
}

impl PodStore {
    /// An empty store keeping deleted pods for `grace`.
    pub fn new(grace: Duration) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            grace,
            synced: AtomicBool::new(false),
            standalone: AtomicBool::new(false),
            names: Interner::default(),
        }
    }

    /// The string interner pods of this store share.
    pub fn names(&self) -> &Interner {
        &self.names
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The pod with this UID, live or deleted less than the grace period ago.
    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        let inner = self.inner.read().ok()?;
        if let Some(p) = inner.live.get(uid) {
            return Some(Arc::clone(p));
        }
        let (p, at) = inner.deleted.get(uid)?;
        (at.elapsed() < self.grace).then(|| Arc::clone(p))
    }

    /// Number of live pods.
    pub fn len(&self) -> usize {
        self.inner.read().map(|i| i.live.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a full list has completed at least once.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Whether there is no API server configuration, so nothing will ever sync.
    pub fn standalone(&self) -> bool {
        self.standalone.load(Ordering::Acquire)
    }

    /// Marks the store as standalone (no API server configuration).
    pub fn set_standalone(&self) {
        self.standalone.store(true, Ordering::Release);
    }

    /// Adds or replaces a pod.
    pub fn apply(&self, pod: PodMeta) {
        let pod = Arc::new(pod);
        let mut inner = self.write();
        inner.deleted.remove(&pod.uid);
        if let Some(relist) = inner.relist.as_mut() {
            relist.insert(Arc::clone(&pod.uid), Arc::clone(&pod));
        }
        inner.live.insert(Arc::clone(&pod.uid), pod);
    }

    /// Marks a pod deleted (it stays resolvable for the grace period).
    pub fn delete(&self, uid: &str) {
        let mut inner = self.write();
        if let Some(p) = inner.live.remove(uid) {
            inner
                .deleted
                .insert(Arc::clone(&p.uid), (p, Instant::now()));
        }
    }

    /// A relist starts: pods not listed again before [`PodStore::end_relist`] are deleted then.
    pub fn begin_relist(&self) {
        self.write().relist = Some(HashMap::new());
    }

    /// A relist completed: the listed pods are the live set.
    pub fn end_relist(&self) {
        let mut inner = self.write();
        let Some(listed) = inner.relist.take() else {
            return;
        };
        let now = Instant::now();
        let gone: Vec<Name> = inner
            .live
            .keys()
            .filter(|u| !listed.contains_key(*u))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(p) = inner.live.remove(&uid) {
                inner.deleted.insert(uid, (p, now));
            }
        }
        inner.live = listed;
        drop(inner);
        self.synced.store(true, Ordering::Release);
    }

    /// Drops deleted pods older than the grace period.
    pub fn purge(&self) {
        let grace = self.grace;
        self.write()
            .deleted
            .retain(|_, (_, at)| at.elapsed() < grace);
    }
}

/// Settings of the pod watcher.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// This node's name (`spec.nodeName` field selector); `None` watches every pod.
    pub node_name: Option<String>,
    pub labels: LabelFilter,
}

/// Feeds `store` from the API server until `stop` resolves. Errors are
/// retried with backoff; the first failure and each recovery are logged once.
pub async fn watch_pods(
    client: kube::Client,
    settings: WatchSettings,
    store: Arc<PodStore>,
    stop: impl std::future::Future<Output = ()>,
) {
    use futures::StreamExt;
    use kube::runtime::watcher::{self, Event};
    use kube::runtime::WatchStreamExt;

    let api: kube::Api<Pod> = kube::Api::all(client);
    let mut config = watcher::Config::default();
    if let Some(node) = &settings.node_name {
        config = config.fields(&format!("spec.nodeName={node}"));
    }
    let stream = watcher::watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    futures::pin_mut!(stop);
    let mut healthy = true;
    loop {
        let next = tokio::select! {
            _ = &mut stop => return,
            n = stream.next() => n,
        };
        let Some(item) = next else { return };
        match item {
            Ok(event) => {
                match event {
                    Event::Init => store.begin_relist(),
                    Event::InitApply(p) | Event::Apply(p) => {
                        if let Some(meta) = PodMeta::from_pod(&p, &settings.labels, store.names()) {
                            store.apply(meta);
                        }
                    }
                    Event::InitDone => {
                        store.end_relist();
                        tracing::info!(
                            pods = store.len(),
                            "pod metadata synced from the API server"
                        );
                    }
                    Event::Delete(p) => {
                        if let Some(uid) = &p.metadata.uid {
                            store.delete(uid);
                        }
                    }
                }
                if !healthy {
                    healthy = true;
                    tracing::info!("Kubernetes API server reachable again; enrichment resumes");
                }
            }
            Err(e) => {
                if healthy {
                    healthy = false;
                    tracing::warn!("Kubernetes API server unavailable ({e}); events keep flowing without pod names until it is back");
                }
            }
        }
        store.purge();
    }
}

/// A client for the API server at `url` (no credentials), or from the
/// environment (in-cluster service account or kubeconfig) when `url` is `None`.
pub async fn client(url: Option<&str>) -> Result<kube::Client, PodsError> {
    let config = match url {
        Some(u) => kube::Config::new(
            u.parse()
                .map_err(|e| PodsError::Config(format!("{u}: {e}")))?,
        ),
        None => kube::Config::infer()
            .await
            .map_err(|e| PodsError::Config(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| PodsError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
