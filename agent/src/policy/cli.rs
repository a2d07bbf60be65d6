//! The policy subcommands: `explain`, `check`, `tls-check`. `main.rs` only dispatches here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::check::{check, tls_check};
use super::diagnostic::Severity;
use super::explain::{explain, render};
use super::load::load_path;
use super::model::PodKey;
use super::settings::{MeshSettings, SettingFlags, SettingsReport};
use super::snapshot::Snapshot;

/// Configuration location and the meshConfig-like settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// Configuration file or directory (YAML as `kubectl get -o yaml` prints it).
    #[arg(long, env = "SOCKMESH_CONFIG")]
    pub config: PathBuf,
    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// Settings Istio keeps in meshConfig, as flags shared by `run` and the query commands. A flag
/// that is given overrides the `istio` ConfigMap (`sockmesh run --kubernetes`); the defaults
/// apply in one place, [`SettingsReport::resolve`].
#[derive(Debug, Clone, clap::Args)]
pub struct MeshArgs {
    /// Namespace whose policies apply mesh-wide [default: meshConfig `rootNamespace`, else
    /// istio-system].
    #[arg(long)]
    pub root_namespace: Option<String>,
    /// Trust domain of SPIFFE identities [default: meshConfig `trustDomain`, else cluster.local].
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Another trust domain whose identities are ours too (Istio's `trustDomainAliases`): accepted
    /// as mesh peers in the handshake (any other trust domain is refused) and matched by
    /// authorization policy principals. Repeatable; comma-separated in the environment variable.
    #[arg(
        long = "trust-domain-alias",
        env = "SOCKMESH_TRUST_DOMAIN_ALIASES",
        value_delimiter = ','
    )]
    pub trust_domain_aliases: Vec<String>,
    /// Cluster DNS domain of Service FQDNs.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Use mTLS towards mesh endpoints when no DestinationRule sets TLS (`--auto-mtls false`
    /// turns it off) [default: meshConfig `enableAutoMtls`, else true].
    #[arg(long, action = clap::ArgAction::Set)]
    pub auto_mtls: Option<bool>,
}

impl MeshArgs {
    pub fn flags(&self) -> SettingFlags {
        SettingFlags {
            trust_domain: self.trust_domain.clone(),
            root_namespace: self.root_namespace.clone(),
            auto_mtls: self.auto_mtls,
            trust_domain_aliases: self.trust_domain_aliases.clone(),
            cluster_domain: self.cluster_domain.clone(),
        }
    }

    /// The settings from flags and defaults alone (no ConfigMap: `--config` and the query
    /// commands).
    pub fn report(&self) -> SettingsReport {
        SettingsReport::resolve(&self.flags(), None)
    }

    pub fn settings(&self) -> MeshSettings {
        self.report().settings()
    }
}

impl ConfigArgs {
    pub fn settings(&self) -> MeshSettings {
        self.mesh.settings()
    }

    /// Loads the configuration; parse errors are fatal for the query commands.
    pub fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let report = load_path(&self.config);
        Snapshot::from_report(report, self.settings()).map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("invalid configuration:\n{}", lines.join("\n"))
        })
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Client: NAMESPACE/POD, or `external` for a client without a pod.
    #[arg(long)]
    pub from: String,
    /// Destination HOST:PORT: service (short, name.ns, FQDN), cluster IP, pod IP or external host.
    #[arg(long)]
    pub to: String,
    /// Source address for authorization `ipBlocks`: the client's when it is `external`, or one
    /// that replaces the client pod's IP.
    #[arg(long)]
    pub source_ip: Option<std::net::IpAddr>,
    /// Endpoint pod (NAMESPACE/POD) the top-level fields describe.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TlsCheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Client pod as NAMESPACE/POD.
    pub pod: String,
}

fn pod_key(s: &str) -> anyhow::Result<PodKey> {
    s.parse().map_err(anyhow::Error::msg)
}

pub fn run_explain(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let from = match args.from.as_str() {
        "external" => None,
        s => Some(pod_key(s)?),
    };
    let endpoint = args.endpoint.as_deref().map(pod_key).transpose()?;
    let snap = args.config.snapshot()?;
    let report = explain(
        &snap,
        from.as_ref(),
        args.source_ip,
        &args.to,
        endpoint.as_ref(),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit code 1 only when there are errors.
pub fn run_check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let report = load_path(&args.config.config);
    let findings = if report.has_errors() {
        report.diagnostics
    } else {
        let snap = Snapshot::from_report(report, args.config.settings())
            .map_err(|_| anyhow::anyhow!("unreachable"))?;
        check(&snap)
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else if findings.is_empty() {
        println!("No issues found.");
    } else {
        findings.iter().for_each(|d| println!("{d}"));
    }
    let failed = findings.iter().any(|d| d.severity == Severity::Error);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn run_tls_check(args: &TlsCheckArgs) -> anyhow::Result<ExitCode> {
    let key = pod_key(&args.pod)?;
    let snap = args.config.snapshot()?;
    if snap.pod(&key).is_none() {
        bail!("unknown pod {key}");
    }
    for line in tls_check(&snap, &key).context("tls-check")? {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
