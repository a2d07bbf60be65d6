//! `sockmesh status | certs | connections`: read-only views over the running agent's admin API.
mod render;
mod table;

use std::time::SystemTime;

use anyhow::Context as _;
use serde::de::DeserializeOwned;

use crate::{
    admin::{CertificateInfo, WorkloadStatus, client},
    connections::ConnectionSnapshot,
    policy::settings::SettingsReport,
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

/// The mesh settings with where each came from, then this node's workloads and their
/// capture/identity state. `--json`: `{"mesh_config": .., "workloads": [..]}`.
pub fn status(args: &ClientArgs) -> anyhow::Result<()> {
    print!("{}", status_view(args)?);
    Ok(())
}

fn status_view(args: &ClientArgs) -> anyhow::Result<String> {
    let [mesh, workloads] = get_all(args, ["/mesh_config", "/workloads"])?;
    let parse = |body: &str, path| -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(body)
            .with_context(|| format!("unexpected answer from {}{path}", args.admin))
    };
    if args.json {
        let both = serde_json::json!({
            "mesh_config": parse(&mesh, "/mesh_config")?,
            "workloads": parse(&workloads, "/workloads")?,
        });
        return Ok(format!("{}\n", serde_json::to_string_pretty(&both)?));
    }
    let mesh: SettingsReport = serde_json::from_value(parse(&mesh, "/mesh_config")?)?;
    let workloads: Vec<WorkloadStatus> = serde_json::from_value(parse(&workloads, "/workloads")?)?;
    Ok(format!(
        "{}\n{}",
        render::mesh_settings(&mesh),
        render::workloads(&workloads)
    ))
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
    let [body] = get_all(args, [path])?;
    if args.json {
        return Ok(body);
    }
    let value: T = serde_json::from_str(&body)
        .with_context(|| format!("unexpected answer from {}{path}", args.admin))?;
    Ok(table(value))
}

/// Bodies of `GET` for each path, in order.
fn get_all<const N: usize>(args: &ClientArgs, paths: [&str; N]) -> anyhow::Result<[String; N]> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut bodies = Vec::with_capacity(N);
    for path in paths {
        bodies.push(runtime.block_on(client::get(&args.admin, path))?);
    }
    Ok(bodies
        .try_into()
        .unwrap_or_else(|_| unreachable!("one body per path")))
}

#[cfg(test)]
mod tests;
