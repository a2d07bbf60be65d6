//! `sockmesh status | certs | connections`: read-only views over the running agent's admin API.
mod render;
mod table;

use std::time::SystemTime;

use anyhow::Context as _;
use serde::de::DeserializeOwned;

use crate::{
    admin::{CertificateInfo, WorkloadStatus, client},
    connections::ConnectionSnapshot,
};

/// Flags shared by the client commands.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientArgs {
    /// Address of the agent's admin API.
    #[arg(long, env = "SOCKMESH_ADMIN", default_value = "127.0.0.1:15000")]
    pub admin: String,
    /// Print the admin API's raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Workloads of this node and their capture/identity state.
pub fn status(args: &ClientArgs) -> anyhow::Result<()> {
    show::<Vec<WorkloadStatus>>(args, "/workloads", |w| render::workloads(&w))
}

/// Workload certificates.
pub fn certs(args: &ClientArgs) -> anyhow::Result<()> {
    show::<Vec<CertificateInfo>>(args, "/certs", |c| render::certs(&c, SystemTime::now()))
}

/// Open connections with mode and peer identity.
pub fn connections(args: &ClientArgs) -> anyhow::Result<()> {
    show::<Vec<ConnectionSnapshot>>(args, "/connections", |c| render::connections(&c))
}

fn show<T: DeserializeOwned>(
    args: &ClientArgs,
    path: &str,
    table: impl FnOnce(T) -> String,
) -> anyhow::Result<()> {
    print!("{}", fetch_view(args, path, table)?);
    Ok(())
}

/// The text to print: raw JSON with `--json`, else the table.
fn fetch_view<T: DeserializeOwned>(
    args: &ClientArgs,
    path: &str,
    table: impl FnOnce(T) -> String,
) -> anyhow::Result<String> {
    let body = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(client::get(&args.admin, path))?;
    if args.json {
        return Ok(body);
    }
    let value: T = serde_json::from_str(&body)
        .with_context(|| format!("unexpected answer from {}{path}", args.admin))?;
    Ok(table(value))
}

#[cfg(test)]
mod tests;
