//! Why `sockmesh ca` refused a request: a reason (the metric label, fixed at compile time), the
//! detail for the log line and the gRPC status the caller gets.

/// A refused certificate request.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub reason: &'static str,
    pub detail: String,
    pub code: tonic::Code,
}

impl Refusal {
    pub fn unauthenticated(reason: &'static str, detail: impl Into<String>) -> Self {
        Self::new(tonic::Code::Unauthenticated, reason, detail)
    }

    pub fn denied(reason: &'static str, detail: impl Into<String>) -> Self {
        Self::new(tonic::Code::PermissionDenied, reason, detail)
    }

    pub fn invalid(reason: &'static str, detail: impl Into<String>) -> Self {
        Self::new(tonic::Code::InvalidArgument, reason, detail)
    }

    /// The CA could not decide (API server unreachable, signing failed): refused, fail closed.
    pub fn unavailable(reason: &'static str, detail: impl Into<String>) -> Self {
        Self::new(tonic::Code::Unavailable, reason, detail)
    }

    fn new(code: tonic::Code, reason: &'static str, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
            code,
        }
    }

    pub fn status(&self) -> tonic::Status {
        tonic::Status::new(self.code, format!("{}: {}", self.reason, self.detail))
    }
}
