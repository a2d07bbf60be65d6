//! Inbound classification of a connection's first bytes (`tls::detect::classify`, which runs the
//! ClientHello parser): arbitrary bytes from the network must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockmesh_agent::tls::detect::{Detected, classify};

fuzz_target!(|data: &[u8]| {
    let verdict = classify(data);
    // A verdict on a prefix must not change when more bytes arrive, except from "need more".
    if let Some(Detected::Plaintext) = verdict {
        let mut longer = data.to_vec();
        longer.push(0);
        assert_eq!(classify(&longer), Some(Detected::Plaintext));
    }
});
