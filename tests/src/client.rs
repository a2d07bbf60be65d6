//! What pod-tool reports, parsed into types tests can assert on.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::process::Output;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The echo server's answer: what it saw of the connection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EchoReply {
    /// `namespace/name` of the serving pod.
    pub server: String,
    /// The client address as the server saw it.
    pub peer: SocketAddr,
    /// The server-side local address (the destination the client's packets arrived at).
    pub local: SocketAddr,
    /// The line the server received.
    pub msg: String,
}

/// How a client connection failed, as classified by pod-tool from the socket error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailKind {
    /// RST in answer to the SYN (nothing listening).
    Refused,
    /// Connection reset or aborted after it was established.
    Reset,
    /// No answer within the timeout.
    Timeout,
    /// The peer closed the connection without replying (e.g. a proxy refusing after accept).
    Closed,
    /// No route.
    Unreachable,
    Other,
}

/// A client connection that failed; the `anyhow::Error` of [`crate::Pod::connect`] downcasts to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    pub kind: FailKind,
    pub detail: String,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection failed ({:?}): {}", self.kind, self.detail)
    }
}

impl std::error::Error for ConnectError {}

/// Result of `pod-tool connect-many`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ManyReport {
    pub ok: usize,
    /// Failure counts by kind.
    pub failed: BTreeMap<FailKind, usize>,
}

#[derive(Deserialize)]
struct Failure {
    error: FailKind,
    detail: String,
}

/// Turns the output of `pod-tool connect` into a reply or a [`ConnectError`].
pub(crate) fn parse_connect(out: &Output) -> Result<EchoReply> {
    let line = stdout_line(out)?;
    if out.status.success() {
        return serde_json::from_str(line).with_context(|| format!("bad reply: {line}"));
    }
    let f: Failure = serde_json::from_str(line).with_context(|| format!("bad failure: {line}"))?;
    Err(ConnectError {
        kind: f.error,
        detail: f.detail,
    }
    .into())
}

pub(crate) fn parse_many(out: &Output) -> Result<ManyReport> {
    let line = stdout_line(out)?;
    serde_json::from_str(line).with_context(|| format!("bad report: {line}"))
}

fn stdout_line(out: &Output) -> Result<&str> {
    let text = std::str::from_utf8(&out.stdout).context("pod-tool output is not UTF-8")?;
    match text.lines().last() {
        Some(line) => Ok(line),
        None => bail!(
            "pod-tool printed nothing ({}); stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
