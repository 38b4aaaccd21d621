//! The kube-rs watchers that feed a [`ServiceMap`]: every Service and every
//! EndpointSlice of the cluster, each object reduced to its entries as it
//! arrives.

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};

use super::convert::{object_id, service_entries, slice_entries, Contribution, ObjectKind};
use super::store::ServiceMap;
use super::SkippedObject;
use crate::enrich::follow::{follow, Reachability};
use crate::enrich::pods::Interner;

/// Turns an object into its contribution (at most `limit` entries).
type Convert<K> = fn(&K, &Interner, usize) -> Result<Contribution, SkippedObject>;

/// Feeds `map` from both watchers until `stop` resolves.
pub async fn watch_service_map(
    client: kube::Client,
    map: Arc<ServiceMap>,
    stop: impl Future<Output = ()>,
) {
    let stop = stop.shared();
    tokio::join!(
        watch_services(client.clone(), Arc::clone(&map), stop.clone()),
        watch_endpoint_slices(client, map, stop),
    );
}

/// Feeds `map` with every Service until `stop` resolves.
pub async fn watch_services(
    client: kube::Client,
    map: Arc<ServiceMap>,
    stop: impl Future<Output = ()>,
) {
    let api: kube::Api<Service> = kube::Api::all(client);
    let convert: Convert<Service> = service_entries;
    watch_kind(api, ObjectKind::Service, convert, map, stop).await;
}

/// Feeds `map` with every EndpointSlice until `stop` resolves.
pub async fn watch_endpoint_slices(
    client: kube::Client,
    map: Arc<ServiceMap>,
    stop: impl Future<Output = ()>,
) {
    let api: kube::Api<EndpointSlice> = kube::Api::all(client);
    let convert: Convert<EndpointSlice> = slice_entries;
    watch_kind(api, ObjectKind::EndpointSlice, convert, map, stop).await;
}

/// One watcher: errors are retried with backoff; the first failure and
/// each recovery are logged once.
async fn watch_kind<K>(
    api: kube::Api<K>,
    kind: ObjectKind,
    convert: Convert<K>,
    map: Arc<ServiceMap>,
    stop: impl Future<Output = ()>,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let lost = format!("the service endpoint map keeps its {kind:?} entries until it is back");
    let back = format!("the service endpoint map follows its {kind:?}s again");
    let log = Reachability {
        lost: &lost,
        back: &back,
    };
    let on_event = |event| handle(event, kind, convert, &map);
    follow(api, watcher::Config::default(), stop, log, on_event, || {}).await;
}

fn handle<K: kube::Resource>(
    event: Event<K>,
    kind: ObjectKind,
    convert: Convert<K>,
    map: &ServiceMap,
) {
    match event {
        Event::Init => map.begin_relist(kind),
        Event::InitApply(o) | Event::Apply(o) => apply(&o, kind, convert, map),
        Event::InitDone => {
            map.end_relist(kind);
            tracing::info!(
                ?kind,
                keys = map.len(),
                objects = map.objects(),
                "service endpoint map synced from the API server"
            );
        }
        Event::Delete(o) => {
            if let Ok(id) = object_id(kind, o.meta(), map.names()) {
                map.delete(&id);
            }
        }
    }
}

/// Adds or replaces what `o` contributes; an object the map does not keep
/// (any more) takes back what it contributed before.
fn apply<K: kube::Resource>(o: &K, kind: ObjectKind, convert: Convert<K>, map: &ServiceMap) {
    match convert(o, map.names(), map.max_entries()) {
        Ok(c) => map.apply(c),
        Err(reason) => {
            tracing::debug!(
                ?kind,
                namespace = o.meta().namespace.as_deref(),
                name = o.meta().name.as_deref(),
                %reason,
                "left out of the service endpoint map"
            );
            if let Ok(id) = object_id(kind, o.meta(), map.names()) {
                map.delete(&id);
            }
        }
    }
}
