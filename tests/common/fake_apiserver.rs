//! A small, faithful stand-in for the Kubernetes API server's list/watch
//! protocol, for Pods (`GET /api/v1/pods`), Services (`GET /api/v1/services`)
//! and EndpointSlices (`GET /apis/discovery.k8s.io/v1/endpointslices`): a
//! request lists (with `metadata.resourceVersion`) or, with `watch=true`,
//! streams newline-delimited watch events from a `resourceVersion` on. One
//! resource version counts the changes of every resource, as etcd's revision
//! does. It honours `fieldSelector=spec.nodeName=...` (pods), sends
//! `BOOKMARK` events on request, answers a resource version older than its
//! compaction point with an `ERROR` event carrying a 410 `Status` (as etcd
//! compaction makes the real one do), and can drop every open watch.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// A resource the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Pods,
    Services,
    EndpointSlices,
}

impl Resource {
    fn path(self) -> &'static str {
        match self {
            Self::Pods => "/api/v1/pods",
            Self::Services => "/api/v1/services",
            Self::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Pods => "Pod",
            Self::Services => "Service",
            Self::EndpointSlices => "EndpointSlice",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Self::EndpointSlices => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    /// The key objects are stored under: a pod's UID (as the pod helpers
    /// delete by UID), `namespace/name` for the others.
    fn key(self, obj: &Value) -> String {
        match self {
            Self::Pods => obj["metadata"]["uid"]
                .as_str()
                .expect("pod uid")
                .to_string(),
            _ => format!(
                "{}/{}",
                obj["metadata"]["namespace"].as_str().expect("namespace"),
                obj["metadata"]["name"].as_str().expect("name")
            ),
        }
    }
}

struct Watch {
    resource: Resource,
    selector: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    objects: HashMap<Resource, BTreeMap<String, Value>>,
    /// Every change: (resource version, resource, type, object).
    log: Vec<(u64, Resource, &'static str, Value)>,
    /// Watches from before this version get 410 Gone.
    compacted: u64,
    watchers: Vec<Watch>,
    /// Query strings of every request, in order, with their resource.
    requests: Vec<(Resource, HashMap<String, String>)>,
}

/// Handle to a running fake API server.
#[derive(Clone)]
pub struct FakeApiServer {
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
}

fn node_of(pod: &Value) -> Option<&str> {
    pod["spec"]["nodeName"].as_str()
}

fn selected(selector: &Option<String>, obj: &Value) -> bool {
    match selector
        .as_deref()
        .and_then(|s| s.strip_prefix("spec.nodeName="))
    {
        Some(node) => node_of(obj) == Some(node),
        None => true,
    }
}

fn line(v: &Value) -> Bytes {
    let mut s = serde_json::to_vec(v).unwrap();
    s.push(b'\n');
    Bytes::from(s)
}

fn list(st: &Inner, resource: Resource, selector: &Option<String>) -> Response {
    let items: Vec<Value> = st
        .objects
        .get(&resource)
        .into_iter()
        .flat_map(|m| m.values())
        .filter(|o| selected(selector, o))
        .cloned()
        .collect();
    let list = json!({"kind": format!("{}List", resource.kind()), "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
    axum::Json(list).into_response()
}

async fn serve(
    State((inner, resource)): State<(Arc<Mutex<Inner>>, Resource)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = inner.lock().unwrap();
    st.requests.push((resource, q.clone()));
    let selector = q.get("fieldSelector").cloned();
    if q.get("watch").map(String::as_str) != Some("true") {
        return list(&st, resource, &selector);
    }
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(st.rv);
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    if from < st.compacted {
        let status = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {from} ({})", st.compacted), "reason": "Expired", "code": 410}});
        let _ = tx.send(line(&status));
        drop(tx);
    } else {
        for (_, r, kind, obj) in st
            .log
            .iter()
            .filter(|(rv, r, _, _)| *rv > from && *r == resource)
        {
            let _ = r;
            if selected(&selector, obj) {
                let _ = tx.send(line(&json!({"type": kind, "object": obj})));
            }
        }
        st.watchers.push(Watch {
            resource,
            selector,
            tx,
        });
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

impl FakeApiServer {
    /// Serves on `addr` (port 0 picks one).
    pub async fn start(addr: SocketAddr) -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let mut app = Router::new();
        for r in [Resource::Pods, Resource::Services, Resource::EndpointSlices] {
            app = app.route(r.path(), get(serve).with_state((Arc::clone(&inner), r)));
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind fake API server");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn change(&self, resource: Resource, kind: &'static str, mut obj: Value) {
        let mut st = self.inner.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = resource.key(&obj);
        let objects = st.objects.entry(resource).or_default();
        if kind == "DELETED" {
            objects.remove(&key);
        } else {
            objects.insert(key, obj.clone());
        }
        st.log.push((rv, resource, kind, obj.clone()));
        let event = line(&json!({"type": kind, "object": obj}));
        st.watchers.retain(|w| {
            w.resource != resource
                || !selected(&w.selector, &obj)
                || w.tx.send(event.clone()).is_ok()
        });
    }

    /// Adds a pod (ADDED).
    pub fn add(&self, pod: Value) {
        self.change(Resource::Pods, "ADDED", pod);
    }

    /// Replaces a pod (MODIFIED).
    pub fn modify(&self, pod: Value) {
        self.change(Resource::Pods, "MODIFIED", pod);
    }

    /// Deletes a pod (DELETED).
    pub fn delete(&self, uid: &str) {
        self.delete_from(Resource::Pods, uid);
    }

    /// Adds an object of `resource` (ADDED).
    pub fn add_to(&self, resource: Resource, obj: Value) {
        self.change(resource, "ADDED", obj);
    }

    /// Replaces an object of `resource` (MODIFIED).
    pub fn modify_in(&self, resource: Resource, obj: Value) {
        self.change(resource, "MODIFIED", obj);
    }

    /// Deletes the object of `resource` stored under `key` (a pod's UID,
    /// `namespace/name` for the others) (DELETED).
    pub fn delete_from(&self, resource: Resource, key: &str) {
        let obj = self
            .inner
            .lock()
            .unwrap()
            .objects
            .get(&resource)
            .and_then(|m| m.get(key))
            .cloned()
            .expect("object exists");
        self.change(resource, "DELETED", obj);
    }

    /// Sends a BOOKMARK at the current resource version to every watch.
    pub fn bookmark(&self) {
        let mut st = self.inner.lock().unwrap();
        st.rv += 1;
        let rv = st.rv.to_string();
        st.watchers.retain(|w| {
            let bm = json!({"type": "BOOKMARK", "object": {"kind": w.resource.kind(), "apiVersion": w.resource.api_version(),
                "metadata": {"resourceVersion": rv}}});
            w.tx.send(line(&bm)).is_ok()
        });
    }

    /// Closes every open watch (the client must reconnect).
    pub fn drop_watches(&self) {
        self.inner.lock().unwrap().watchers.clear();
    }

    /// Forgets history: a watch from an older resource version gets 410 Gone.
    pub fn compact(&self) {
        let mut st = self.inner.lock().unwrap();
        st.compacted = st.rv + 1;
        st.log.clear();
    }

    /// Query strings of all pod requests so far.
    pub fn requests(&self) -> Vec<HashMap<String, String>> {
        self.requests_for(Resource::Pods)
    }

    /// Query strings of all requests of `resource` so far.
    pub fn requests_for(&self, resource: Resource) -> Vec<HashMap<String, String>> {
        let st = self.inner.lock().unwrap();
        st.requests
            .iter()
            .filter(|(r, _)| *r == resource)
            .map(|(_, q)| q.clone())
            .collect()
    }

    /// Current resource version.
    pub fn resource_version(&self) -> u64 {
        self.inner.lock().unwrap().rv
    }
}

/// A running Pod object as the API server returns it, with one container
/// `app` (image `registry.example/app:1.0`) whose runtime id is `container_id`.
pub fn pod(
    uid: &str,
    name: &str,
    namespace: &str,
    node: &str,
    volumes: Value,
    container_id: &str,
) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": {"app": name},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "uid": "owner", "controller": true}]},
        "spec": {"nodeName": node, "serviceAccountName": "default",
            "containers": [{"name": "app", "image": "registry.example/app:1.0"}], "volumes": volumes},
        "status": {"phase": "Running", "containerStatuses": [{"name": "app", "image": "registry.example/app:1.0", "imageID": "",
            "ready": true, "restartCount": 0, "containerID": format!("containerd://{container_id}")}]}
    })
}

/// A ClusterIP Service as the API server returns it: `cluster_ips` in
/// `clusterIPs` (the first also in `clusterIP`; two make it dual-stack),
/// and `ports` as `spec.ports` (`[{"name", "port", "protocol", "targetPort"}]`).
pub fn service(namespace: &str, name: &str, cluster_ips: &[&str], ports: Value) -> Value {
    let families: Vec<&str> = cluster_ips
        .iter()
        .map(|ip| if ip.contains(':') { "IPv6" } else { "IPv4" })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("svc-{namespace}-{name}"),
            "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"app": name},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ips[0], "clusterIPs": cluster_ips,
            "ipFamilies": families, "ipFamilyPolicy": if cluster_ips.len() > 1 { "RequireDualStack" } else { "SingleStack" },
            "internalTrafficPolicy": "Cluster", "sessionAffinity": "None",
            "selector": {"app": name}, "ports": ports},
        "status": {"loadBalancer": {}}
    })
}

/// An EndpointSlice of Service `service` as the endpoint-slice controller
/// writes it: one endpoint per `(address, pod name)`, each with its pod as
/// `targetRef` (UID `uid-<pod name>`) and ready conditions; `ports` as the
/// slice's `ports` (`[{"name", "port", "protocol"}]`).
pub fn endpoint_slice(
    namespace: &str,
    name: &str,
    service: &str,
    address_type: &str,
    endpoints: &[(&str, &str)],
    ports: Value,
) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(address, pod)| {
            json!({"addresses": [address],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": "node-a", "zone": "zone-1",
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod, "uid": format!("uid-{pod}")}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("eps-{namespace}-{name}"),
            "generateName": format!("{service}-"),
            "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service, "uid": format!("svc-{namespace}-{service}"),
                "controller": true, "blockOwnerDeletion": true}]},
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": ports
    })
}

/// Starts a fake API server on its own runtime, for synchronous tests.
pub fn start_blocking(addr: SocketAddr) -> (FakeApiServer, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let api = rt.block_on(FakeApiServer::start(addr));
    (api, rt)
}

/// The demo pod as the API server would describe it: volume `db-creds` is
/// Secret `db-credentials`, `app-config` is ConfigMap `app-settings` with key
/// `config.yaml` remapped to `app.yaml`, and `kube-api-access-x7k2p` is a
/// projected token volume whose `ca.crt` comes from key `root-ca.pem` of
/// ConfigMap `kube-root-ca.crt`.
pub fn demo_pod(uid: &str, container_id: &str) -> Value {
    let mut pod = pod(
        uid,
        "payments-api-0",
        "payments",
        "node-a",
        json!([
            {"name": "db-creds", "secret": {"secretName": "db-credentials"}},
            {"name": "app-config", "configMap": {"name": "app-settings", "items": [{"key": "config.yaml", "path": "app.yaml"}]}},
            {"name": "kube-api-access-x7k2p", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "root-ca.pem", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
            ]}}
        ]),
        container_id,
    );
    // Where the sandbox's container (demo::PodVolumes::container) mounts them.
    pod["spec"]["containers"][0]["volumeMounts"] = json!([
        {"name": "db-creds", "mountPath": "/etc/db", "readOnly": true},
        {"name": "app-config", "mountPath": "/etc/config", "readOnly": true},
        {"name": "kube-api-access-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}
    ]);
    pod
}
