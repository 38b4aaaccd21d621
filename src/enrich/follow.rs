//! The loop every kube-rs watcher of the collector runs (pods, Services,
//! EndpointSlices): follow the watch stream with backoff until stop, hand
//! each event on, and log the API server's loss and return once each.

use std::future::Future;

use kube::runtime::watcher::{self, Event};

/// What the log says the collector does without the API server, and once
/// it is back: `Kubernetes API server unavailable (<error>); <lost>` and
/// `Kubernetes API server reachable again; <back>`.
#[derive(Debug, Clone, Copy)]
pub struct Reachability<'a> {
    pub lost: &'a str,
    pub back: &'a str,
}

/// Follows `api`'s watch (errors retried with backoff) until `stop`
/// resolves or the stream ends: each event goes to `on_event`, and `after`
/// runs after every item, event or error.
pub async fn follow<K>(
    api: kube::Api<K>,
    config: watcher::Config,
    stop: impl Future<Output = ()>,
    log: Reachability<'_>,
    mut on_event: impl FnMut(Event<K>),
    mut after: impl FnMut(),
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;

    let stream = watcher::watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    futures::pin_mut!(stop);
    let mut healthy = true;
    loop {
        let next = tokio::select! {
            _ = &mut stop => return,
            n = stream.next() => n,
        };
        match next {
            None => return,
            Some(Ok(event)) => {
                on_event(event);
                if !healthy {
                    healthy = true;
                    tracing::info!("Kubernetes API server reachable again; {}", log.back);
                }
            }
            Some(Err(e)) => {
                if healthy {
                    healthy = false;
                    tracing::warn!("Kubernetes API server unavailable ({e}); {}", log.lost);
                }
            }
        }
        after();
    }
}
