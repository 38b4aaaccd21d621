//! The kube-rs watcher that feeds a [`PodStore`] from the API server.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::meta::{LabelFilter, PodMeta};
use super::store::PodStore;
use super::PodsError;
use crate::enrich::follow::{follow, Reachability};

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
    use kube::runtime::watcher::{self, Event};

    let api: kube::Api<Pod> = kube::Api::all(client);
    let mut config = watcher::Config::default();
    if let Some(node) = &settings.node_name {
        config = config.fields(&format!("spec.nodeName={node}"));
    }
    let log = Reachability {
        lost: "events keep flowing without pod names until it is back",
        back: "enrichment resumes",
    };
    let on_event = |event| match event {
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
    };
    follow(api, config, stop, log, on_event, || store.purge()).await;
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
