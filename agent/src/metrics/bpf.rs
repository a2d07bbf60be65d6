//! BPF-side metrics, read from the kernel at scrape time rather than mirrored: the per-CPU STATS
//! counters (`sockmesh_bpf_events_total{event}`) and map occupancy (`sockmesh_bpf_map_entries{map}`).
use std::sync::RwLock;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

/// Returns `(name, value)` pairs; called on every scrape.
pub type Reader = Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

/// Collector whose readers are installed once the capture is loaded (after the registry exists).
#[derive(Default)]
pub(super) struct BpfCollector {
    pub(super) events: RwLock<Option<Reader>>,
    pub(super) map_entries: RwLock<Option<Reader>>,
}

impl std::fmt::Debug for BpfCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpfCollector").finish_non_exhaustive()
    }
}

impl Collector for BpfCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(read) = &*self.events.read().unwrap_or_else(|e| e.into_inner()) {
            let values = read();
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(
                "sockmesh_bpf_events",
                "Events counted by the capture programs (per-CPU STATS summed)",
                None,
                counter.metric_type(),
            )?;
            for (event, value) in values {
                ConstCounter::new(value).encode(family.encode_family(&[("event", event)])?)?;
            }
        }
        if let Some(read) = &*self.map_entries.read().unwrap_or_else(|e| e.into_inner()) {
            let values = read();
            let gauge = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(
                "sockmesh_bpf_map_entries",
                "Entries in each pinned BPF map",
                None,
                gauge.metric_type(),
            )?;
            for (map, value) in values {
                let value = i64::try_from(value).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(family.encode_family(&[("map", map)])?)?;
            }
        }
        Ok(())
    }
}
