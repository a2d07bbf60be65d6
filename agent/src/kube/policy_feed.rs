//! Feeds the API's objects into the policy model: the same `Resources` and `ConfigHandle` the file
//! source uses, so the resolver has one code path whatever the source.
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{info, warn};

use super::api_state::ApiState;
use crate::policy::{ConfigHandle, model::Resources};

/// Converts the watched objects; an object that does not fit the model is skipped with a warning
/// naming it, and never blocks the others.
pub fn resources(state: &ApiState) -> Resources {
    let mut r = Resources {
        namespaces: parse(state, "Namespace"),
        pods: parse(state, "Pod"),
        services: parse(state, "Service"),
        secrets: parse(state, "Secret"),
        service_entries: parse(state, "ServiceEntry"),
        peer_authentications: parse(state, "PeerAuthentication"),
        destination_rules: parse(state, "DestinationRule"),
        mesh_policies: parse(state, "MeshPolicy"),
        policies: parse(state, "Policy"),
        authorization_policies: parse(state, "AuthorizationPolicy"),
    };
    r.canonicalize();
    r
}

fn parse<T: DeserializeOwned>(state: &ApiState, kind: &str) -> Vec<T> {
    state
        .objects(kind)
        .into_iter()
        .filter_map(|v| match serde_json::from_value(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                let name = v["metadata"]["name"].as_str().unwrap_or("?");
                let ns = v["metadata"]["namespace"].as_str().unwrap_or("");
                warn!(kind, namespace = ns, name, error = %e, "API object skipped");
                None
            }
        })
        .collect()
}

/// Applies every API change to the configuration until the API watcher stops. The returned
/// receiver turns true once a state in which every watch had listed is applied: from then on the
/// model reflects the cluster, not a partial list.
pub fn feed(mut api: watch::Receiver<ApiState>, config: ConfigHandle) -> watch::Receiver<bool> {
    let (synced_tx, synced) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let (resources, synced) = {
                let state = api.borrow_and_update();
                (resources(&state), state.synced())
            };
            config.apply(resources, Vec::new());
            info!(source = "api", "configuration reloaded");
            if synced {
                synced_tx.send_if_modified(|s| !std::mem::replace(s, true));
            }
            if api.changed().await.is_err() {
                return;
            }
        }
    });
    synced
}
