//! Routes of the three servers: the loopback admin API, `/metrics`, and `/healthz/ready` with
//! `/healthz/live`.
use std::{collections::HashMap, sync::Arc};

use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use serde_json::json;

use super::{
    AdminSource, Readiness,
    http::{Body, json, method_not_allowed, not_found, respond, text},
};
use crate::{logging::LogControl, metrics, policy::settings::SettingsHandle, telemetry::Telemetry};

/// What the admin API serves from.
pub struct AdminState {
    pub source: Arc<dyn AdminSource>,
    pub telemetry: Arc<Telemetry>,
    /// `None` when logging was not set up through [`crate::logging::init`].
    pub logging: Option<LogControl>,
    pub readiness: Arc<Readiness>,
    /// The meshConfig settings in force and where each came from.
    pub settings: SettingsHandle,
}

const INDEX: &str = "sockmesh admin API\n\
    /config_dump        resolved model and effective modes\n\
    /mesh_config        trust domain, root namespace, auto mTLS and where each came from\n\
    /workloads          pods, cgroups, netns, identity, enrollment state\n\
    /certs              workload certificates\n\
    /connections        open connections\n\
    /logging            GET the log filter; POST ?level=debug, ?filter=<directives> or ?reset\n\
    /stats/prometheus   metrics\n";

pub(super) fn admin(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if path == "/logging" {
        return logging(state.logging.as_ref(), req);
    }
    if req.method() != Method::GET {
        return method_not_allowed();
    }
    match path {
        "/" => text(StatusCode::OK, INDEX),
        "/config_dump" => json(StatusCode::OK, &state.source.config_dump()),
        "/mesh_config" => json(StatusCode::OK, &**state.settings.load()),
        "/workloads" => json(StatusCode::OK, &state.source.workloads()),
        "/certs" => json(StatusCode::OK, &state.source.certificates()),
        "/connections" => json(StatusCode::OK, &state.telemetry.connections.snapshot()),
        "/stats/prometheus" => metrics_body(&state.telemetry.metrics),
        _ => not_found(),
    }
}

pub(super) fn metrics_endpoint(
    metrics: &metrics::Metrics,
    req: &Request<Incoming>,
) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics" | "/stats/prometheus") => metrics_body(metrics),
        (_, "/metrics" | "/stats/prometheus") => method_not_allowed(),
        _ => not_found(),
    }
}

fn metrics_body(metrics: &metrics::Metrics) -> Response<Body> {
    respond(StatusCode::OK, metrics::CONTENT_TYPE, metrics.encode())
}

/// The kubelet's port. `/healthz/live`: 200 whenever the runtime serving it answers (a liveness
/// probe restarts only a hung agent, never one waiting for the API). `/healthz/ready`: 200 when
/// every check holds, else 503 listing what is missing.
pub(super) fn readiness(readiness: &Readiness, req: &Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/healthz/live" => return text(StatusCode::OK, "live\n"),
        "/healthz/ready" => {}
        _ => return not_found(),
    }
    let missing = readiness.missing();
    if missing.is_empty() {
        return text(StatusCode::OK, "ready\n");
    }
    let names: Vec<&str> = missing.iter().map(|c| c.as_str()).collect();
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: waiting for {}\n", names.join(", ")),
    )
}

/// GET: the active filter. POST/PUT: `?level=`, `?filter=` or `?reset`, then the new filter.
fn logging(control: Option<&LogControl>, req: &Request<Incoming>) -> Response<Body> {
    let Some(control) = control else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "logging was not initialised with a reloadable filter"}),
        );
    };
    let query: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let result = match *req.method() {
        Method::GET => Ok(()),
        Method::POST | Method::PUT => {
            if let Some(level) = query.get("level") {
                control.set_level(level).map_err(|e| e.to_string())
            } else if let Some(filter) = query.get("filter") {
                control.set_filter(filter).map_err(|e| e.to_string())
            } else if query.contains_key("reset") {
                control.reset().map_err(|e| e.to_string())
            } else {
                Err("expected ?level=<level>, ?filter=<directives> or ?reset".to_owned())
            }
        }
        _ => return method_not_allowed(),
    };
    match result {
        Ok(()) => json(StatusCode::OK, &json!({"filter": control.current()})),
        Err(e) => json(
            StatusCode::BAD_REQUEST,
            &json!({"error": e, "filter": control.current()}),
        ),
    }
}
