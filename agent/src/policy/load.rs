//! Reads YAML files and directories into [`Resources`].
//!
//! Multi-document files, `kind: List` and directories (recursively, sorted, hidden entries such as a
//! ConfigMap mount's `..data` skipped) are accepted. Unknown kinds are skipped with a debug log; unknown
//! fields produce [`Code::UnknownField`] warnings; parse errors name file, document, resource and field.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_norway::Value;

use super::diagnostic::{Code, Diagnostic, Location, Severity};
use super::model::{ObjectMeta, ResourceRef, Resources};

/// The result of loading: the resources that parsed and every finding on the way.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub resources: Resources,
    pub diagnostics: Vec<Diagnostic>,
    /// Every kind/namespace/name parsed so far, to report duplicates across files.
    seen: BTreeSet<ResourceRef>,
}

impl LoadReport {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

/// Loads a file or a directory tree. Never fails outright: problems are diagnostics, so that `check`
/// can list them all and the watcher can decide to keep the last good configuration.
pub fn load_path(path: &Path) -> LoadReport {
    let mut report = LoadReport::default();
    let mut files = Vec::new();
    if let Err(e) = collect_files(path, true, &mut files) {
        report.diagnostics.push(Diagnostic::error(
            Code::ParseError,
            Location {
                file: Some(path.to_owned()),
                ..Location::default()
            },
            format!("cannot read: {e}"),
        ));
        return report;
    }
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => parse_into(&text, Some(&file), &mut report),
            Err(e) => report.diagnostics.push(Diagnostic::error(
                Code::ParseError,
                Location {
                    file: Some(file.clone()),
                    ..Location::default()
                },
                format!("cannot read: {e}"),
            )),
        }
    }
    finish(&mut report);
    report
}

/// Parses YAML text (one or more documents), for tests and in-memory sources.
pub fn load_str(text: &str) -> LoadReport {
    let mut report = LoadReport::default();
    parse_into(text, None, &mut report);
    finish(&mut report);
    report
}

/// The sorted list of configuration files under `path`; also used by the watcher to fingerprint.
pub fn config_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect_files(path, true, &mut files)?;
    Ok(files)
}

fn collect_files(path: &Path, top: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        entries.sort();
        for entry in entries {
            collect_files(&entry, false, out)?;
        }
    } else if top || is_config_file(path) {
        out.push(path.to_owned());
    }
    Ok(())
}

fn is_config_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn finish(report: &mut LoadReport) {
    report.resources.canonicalize();
    report.diagnostics.sort();
}

fn parse_into(text: &str, file: Option<&Path>, report: &mut LoadReport) {
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let location = Location {
            file: file.map(Path::to_owned),
            document: Some(index),
            ..Location::default()
        };
        let value = match serde::Deserialize::deserialize(document) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                report.diagnostics.push(Diagnostic::error(
                    Code::ParseError,
                    location,
                    format!("invalid YAML: {e}"),
                ));
                // A syntax error ends the stream: later documents cannot be located reliably.
                break;
            }
        };
        let is_list = value
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List"))
            && value.get("items").is_some();
        if is_list {
            let items = value
                .get("items")
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default();
            for (i, item) in items.into_iter().enumerate() {
                let field = Some(format!("items[{i}]"));
                parse_object(
                    item,
                    Location {
                        field,
                        ..location.clone()
                    },
                    report,
                );
            }
        } else {
            parse_object(value, location, report);
        }
    }
}

/// Istio kinds we model, to tell an unsupported version from an unrelated kind.
const ISTIO_KINDS: &[(&str, &str)] = &[
    ("security.istio.io", "PeerAuthentication"),
    ("security.istio.io", "AuthorizationPolicy"),
    ("networking.istio.io", "DestinationRule"),
    ("networking.istio.io", "ServiceEntry"),
    ("authentication.istio.io", "MeshPolicy"),
    ("authentication.istio.io", "Policy"),
];

fn parse_object(value: Value, mut location: Location, report: &mut LoadReport) {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (group, version) = api_version
        .rsplit_once('/')
        .unwrap_or(("", api_version.as_str()));
    let resource = ResourceRef::new(&kind, namespace.as_deref(), &name);
    location.resource = Some(resource.clone());

    let port_findings = super::port_numbers::findings(group, &kind, &value, &location);
    let unloadable = port_findings.iter().any(|d| d.severity == Severity::Error);
    report.diagnostics.extend(port_findings);
    if unloadable {
        return;
    }
    let supported = |versions: &[&str]| versions.contains(&version);
    let res = &mut report.resources;
    let outcome = match (group, kind.as_str()) {
        ("", "Namespace") => decode(value, &kind, &mut res.namespaces),
        ("", "Pod") => decode(value, &kind, &mut res.pods),
        ("", "Service") => decode(value, &kind, &mut res.services),
        ("", "Secret") => decode(value, &kind, &mut res.secrets),
        ("security.istio.io", "PeerAuthentication") if supported(&["v1beta1", "v1"]) => {
            decode(value, &kind, &mut res.peer_authentications)
        }
        ("security.istio.io", "AuthorizationPolicy") if supported(&["v1beta1", "v1"]) => {
            decode(value, &kind, &mut res.authorization_policies)
        }
        ("networking.istio.io", "DestinationRule") if supported(&["v1alpha3", "v1beta1", "v1"]) => {
            decode(value, &kind, &mut res.destination_rules)
        }
        ("networking.istio.io", "ServiceEntry") if supported(&["v1alpha3", "v1beta1", "v1"]) => {
            decode(value, &kind, &mut res.service_entries)
        }
        ("authentication.istio.io", "MeshPolicy") if supported(&["v1alpha1"]) => {
            decode(value, &kind, &mut res.mesh_policies)
        }
        ("authentication.istio.io", "Policy") if supported(&["v1alpha1"]) => {
            decode(value, &kind, &mut res.policies)
        }
        _ if ISTIO_KINDS.contains(&(group, kind.as_str())) => {
            report.diagnostics.push(Diagnostic::warning(
                Code::InvalidValue,
                Location {
                    field: Some("apiVersion".into()),
                    ..location
                },
                format!("unsupported apiVersion {api_version} for {kind}; skipped"),
            ));
            return;
        }
        _ => {
            tracing::debug!(%api_version, %kind, %name, "skipping unknown kind");
            return;
        }
    };
    match outcome {
        Ok(unknown) => {
            if !report.seen.insert(resource) {
                report.diagnostics.push(Diagnostic::error(
                    Code::DuplicateResource,
                    location.clone(),
                    "defined twice; which one applies would depend on file order",
                ));
            }
            for field in unknown.into_iter().filter(|f| !known_unmodelled(&kind, f)) {
                report.diagnostics.push(Diagnostic::warning(
                    Code::UnknownField,
                    Location {
                        field: Some(field.clone()),
                        ..location.clone()
                    },
                    format!("unknown field {field} ignored"),
                ));
            }
        }
        Err((field, message)) => {
            report.diagnostics.push(Diagnostic::error(
                Code::ParseError,
                Location { field, ..location },
                message,
            ));
        }
    }
}

/// Decodes one object, returning the ignored field paths, or the failing field path and message.
fn decode<T: DeserializeOwned + HasMeta>(
    value: Value,
    kind: &str,
    out: &mut Vec<T>,
) -> Result<Vec<String>, (Option<String>, String)> {
    let mut unknown = Vec::new();
    // serde_ignored writes `?` for each `Option` on the way; users never see those levels.
    let mut record =
        |path: serde_ignored::Path<'_>| unknown.push(path.to_string().replace(".?", ""));
    let de = serde_ignored::Deserializer::new(value, &mut record);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(obj) => {
            if obj.meta().name.is_empty() {
                return Err((
                    Some("metadata.name".into()),
                    format!("{kind} without metadata.name"),
                ));
            }
            out.push(obj);
            Ok(unknown)
        }
        Err(e) => {
            let path = e.path().to_string();
            let field = (path != ".").then_some(path);
            Err((field, e.into_inner().to_string()))
        }
    }
}

/// Access to metadata for the generic decoder.
pub trait HasMeta {
    fn meta(&self) -> &ObjectMeta;
}

macro_rules! has_meta {
    ($($t:ty),*) => {$(
        impl HasMeta for $t {
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
        }
    )*};
}

has_meta!(
    super::model::Namespace,
    super::model::Pod,
    super::model::Service,
    super::model::Secret,
    super::model::ServiceEntry,
    super::model::PeerAuthentication,
    super::model::AuthorizationPolicy,
    super::model::DestinationRule,
    super::model::MeshPolicy,
    super::model::Policy
);

/// Fields that are legitimate but not modelled, so they must not produce warnings: Kubernetes
/// bookkeeping, everything the API server adds to core kinds, and Istio fields unrelated to TLS.
fn known_unmodelled(kind: &str, path: &str) -> bool {
    const META: &[&str] = &[
        "resourceVersion",
        "generation",
        "managedFields",
        "ownerReferences",
        "generateName",
        "selfLink",
        "finalizers",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ];
    const ISTIO: &[&str] = &[
        "loadBalancer",
        "connectionPool",
        "outlierDetection",
        "tunnel",
        "proxyProtocol",
        "caCrl",
        "targetRef",
        "targetRefs",
        "origins",
        "originIsOptional",
        "principalBinding",
        "peerIsOptional",
        "network",
        "locality",
        "weight",
        "serviceAccount",
        "workloadSelector",
    ];
    let mut parts = path.split('.');
    let top = parts.next().unwrap_or("");
    let last = path.rsplit('.').next().unwrap_or("");
    match top {
        "apiVersion" | "kind" | "status" => true,
        "metadata" => META.contains(&last) && path.matches('.').count() == 1,
        "spec" if matches!(kind, "Pod" | "Service" | "Namespace") => true,
        "immutable" => kind == "Secret",
        "spec" => ISTIO.contains(&last),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
