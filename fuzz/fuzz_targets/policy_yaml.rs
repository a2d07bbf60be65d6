//! The configuration loader (`policy::load::load_str`) and what `sockmesh check` does with its
//! result: arbitrary user YAML must yield diagnostics, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockmesh_agent::policy::check::check;
use sockmesh_agent::policy::load::load_str;
use sockmesh_agent::policy::{MeshSettings, Snapshot};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let report = load_str(text);
    if let Ok(snapshot) = Snapshot::from_report(report, MeshSettings::default()) {
        check(&snapshot);
    }
});
