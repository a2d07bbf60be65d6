//! Capture: the eBPF programs that steer pod sockets to the proxy, their pinned maps and links.
//!
//! Programs and maps are pinned under `<pin-dir>/v<layout>/` so capture survives an agent restart;
//! a restarting agent adopts the pinned links instead of attaching twice.
mod loader;
mod maps;
mod pins;
mod sk_lookup;

pub use loader::{Capture, CaptureConfig};
pub use maps::{OriginalDst, addr_key};
pub use pins::PinLayout;
