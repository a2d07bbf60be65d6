//! `sockmesh ca`'s metrics: certificates issued and requests refused by reason, on `/metrics`.

use std::sync::Arc;

use hyper::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::admin::http::{self, Handler};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

pub struct CaMetrics {
    registry: Registry,
    issued: Counter,
    refused: Family<RefusalLabels, Counter>,
}

impl CaMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let issued = Counter::default();
        registry.register(
            "sockmesh_ca_certificates_issued",
            "Workload certificates signed",
            issued.clone(),
        );
        let refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "sockmesh_ca_refusals",
            "Certificate requests refused, by reason",
            refused.clone(),
        );
        CaMetrics {
            registry,
            issued,
            refused,
        }
    }

    pub fn issued(&self) {
        self.issued.inc();
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusalLabels { reason }).inc();
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("encoding metrics into a String");
        out
    }

    /// Serves `/metrics` on `listener` until the task is aborted.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let handler: Handler = Arc::new(move |req| {
            if req.uri().path() == "/metrics" {
                http::respond(StatusCode::OK, crate::metrics::CONTENT_TYPE, self.encode())
            } else {
                http::not_found()
            }
        });
        http::serve(listener, handler).await;
    }
}
