//! A small, faithful stand-in for the Kubernetes API server's pod list/watch
//! protocol: `GET /api/v1/pods` lists (with `metadata.resourceVersion`) or,
//! with `watch=true`, streams newline-delimited watch events from a
//! `resourceVersion` on. It honours `fieldSelector=spec.nodeName=...`, sends
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

#[derive(Default)]
struct Inner {
    rv: u64,
    pods: BTreeMap<String, Value>,
    /// Every change: (resource version, type, object).
    log: Vec<(u64, &'static str, Value)>,
    /// Watches from before this version get 410 Gone.
    compacted: u64,
    watchers: Vec<(Option<String>, mpsc::UnboundedSender<Bytes>)>,
    /// Query strings of every request, in order.
    requests: Vec<HashMap<String, String>>,
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

fn selected(selector: &Option<String>, pod: &Value) -> bool {
    match selector
        .as_deref()
        .and_then(|s| s.strip_prefix("spec.nodeName="))
    {
        Some(node) => node_of(pod) == Some(node),
        None => true,
    }
}

fn line(v: &Value) -> Bytes {
    let mut s = serde_json::to_vec(v).unwrap();
    s.push(b'\n');
    Bytes::from(s)
}

async fn pods(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = inner.lock().unwrap();
    st.requests.push(q.clone());
    let selector = q.get("fieldSelector").cloned();
    if q.get("watch").map(String::as_str) != Some("true") {
        let items: Vec<Value> = st
            .pods
            .values()
            .filter(|p| selected(&selector, p))
            .cloned()
            .collect();
        let list = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
        return axum::Json(list).into_response();
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
        for (rv, kind, obj) in st.log.iter().filter(|(rv, _, _)| *rv > from) {
            let _ = rv;
            if selected(&selector, obj) {
                let _ = tx.send(line(&json!({"type": kind, "object": obj})));
            }
        }
        st.watchers.push((selector, tx));
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
        let app = Router::new()
            .route("/api/v1/pods", get(pods))
            .with_state(Arc::clone(&inner));
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

    fn change(&self, kind: &'static str, mut pod: Value) {
        let mut st = self.inner.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
        if kind == "DELETED" {
            st.pods.remove(&uid);
        } else {
            st.pods.insert(uid, pod.clone());
        }
        st.log.push((rv, kind, pod.clone()));
        st.watchers.retain(|(sel, tx)| {
            !selected(sel, &pod) || tx.send(line(&json!({"type": kind, "object": pod}))).is_ok()
        });
    }

    /// Adds a pod (ADDED).
    pub fn add(&self, pod: Value) {
        self.change("ADDED", pod);
    }

    /// Replaces a pod (MODIFIED).
    pub fn modify(&self, pod: Value) {
        self.change("MODIFIED", pod);
    }

    /// Deletes a pod (DELETED).
    pub fn delete(&self, uid: &str) {
        let pod = self
            .inner
            .lock()
            .unwrap()
            .pods
            .get(uid)
            .cloned()
            .expect("pod exists");
        self.change("DELETED", pod);
    }

    /// Sends a BOOKMARK at the current resource version to every watch.
    pub fn bookmark(&self) {
        let mut st = self.inner.lock().unwrap();
        st.rv += 1;
        let bm = json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": st.rv.to_string()}}});
        st.watchers.retain(|(_, tx)| tx.send(line(&bm)).is_ok());
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

    /// Query strings of all requests so far.
    pub fn requests(&self) -> Vec<HashMap<String, String>> {
        self.inner.lock().unwrap().requests.clone()
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
