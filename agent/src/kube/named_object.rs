//! One object watched by name (a `metadata.name` field selector, which RBAC `resourceNames` can
//! narrow list/watch to): the meshConfig ConfigMap, the agent's DaemonSet and namespace.
use std::fmt::Debug;

use ::kube::{
    Api, Resource,
    runtime::watcher::{self, Event},
};
use futures::StreamExt as _;
use serde::de::DeserializeOwned;
use tracing::warn;

use super::api_source::Backoff;

/// Calls `observe` with the object after every complete list (`None`: absent) and every change
/// (`None`: deleted), until the watch ends. Errors (an outage, RBAC already removed) are retried
/// after a backoff and observe nothing, so what was seen last stays.
pub async fn follow<K>(
    api: Api<K>,
    name: &str,
    backoff: Backoff,
    mut observe: impl FnMut(Option<&K>),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(api, config).boxed();
    let mut listed: Option<K> = None;
    let mut delay = backoff.min;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed = None,
            Ok(Event::InitApply(obj)) => listed = Some(obj),
            Ok(Event::InitDone) => observe(listed.take().as_ref()),
            Ok(Event::Apply(obj)) => observe(Some(&obj)),
            Ok(Event::Delete(_)) => observe(None),
            Err(e) => {
                warn!(name, error = %e, "watch failed; keeping what it saw");
                tokio::time::sleep(delay).await;
                delay = backoff.next(delay);
                continue;
            }
        }
        delay = backoff.min;
    }
}
