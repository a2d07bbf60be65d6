//! Readiness: the agent reports ready only when every check holds, so a rolling update waits
//! for the new agent to capture, know the config and hold certificates before the old one goes.
use std::sync::atomic::{AtomicBool, Ordering};

/// One condition of readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Capture programs loaded and attached (or taken over from the pins).
    ProgramsAttached,
    /// The first configuration (pods, policy) has been loaded and applied.
    ConfigSynced,
    /// Every enrolled pod has a certificate.
    CertificatesIssued,
}

impl Check {
    const ALL: [Check; 3] = [
        Check::ProgramsAttached,
        Check::ConfigSynced,
        Check::CertificatesIssued,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProgramsAttached => "programs attached",
            Self::ConfigSynced => "config synced",
            Self::CertificatesIssued => "certificates issued",
        }
    }
}

/// Shared flags, set by whoever completes each check (and cleared if it stops holding).
#[derive(Debug, Default)]
pub struct Readiness {
    flags: [AtomicBool; 3],
}

impl Readiness {
    pub fn set(&self, check: Check, holds: bool) {
        self.flags[check as usize].store(holds, Ordering::Release);
    }

    /// Checks that do not hold yet, in a fixed order.
    pub fn missing(&self) -> Vec<Check> {
        Check::ALL
            .into_iter()
            .filter(|c| !self.flags[*c as usize].load(Ordering::Acquire))
            .collect()
    }
}
