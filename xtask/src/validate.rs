//! `cargo xtask validate-manifests`: every YAML file under deploy/ is checked offline, so a broken
//! manifest never lands. Core kinds go through the Kubernetes OpenAPI schemas shipped inside the
//! `kubernetes-validate` PyPI package (strict: unknown fields are errors); CRD kinds, which those
//! schemas lack, get a structural check here. When kubectl is present the kustomize base is also
//! rendered and the result validated, which catches broken kustomizations too.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use yaml_rust2::{Yaml, YamlLoader};

use crate::cmd::Cmd;
use crate::setup::{KUBERNETES_VALIDATE_VERSION, validator_python};

/// The oldest Kubernetes release we claim to support; its schemas ship with the pinned validator.
const KUBERNETES_VERSION: &str = "1.30.0";

/// Kinds outside the core schemas that deploy/ may use, by API group: Istio's policy CRDs, which
/// sockmesh reads, and kustomize's own configuration file.
const CRD_KINDS: &[(&str, &[&str])] = &[
    (
        "security.istio.io",
        &[
            "PeerAuthentication",
            "AuthorizationPolicy",
            "RequestAuthentication",
        ],
    ),
    (
        "networking.istio.io",
        &[
            "DestinationRule",
            "ServiceEntry",
            "VirtualService",
            "Sidecar",
        ],
    ),
    ("authentication.istio.io", &["MeshPolicy", "Policy"]),
    ("kustomize.config.k8s.io", &["Kustomization"]),
];

pub fn run(root: &Path) -> Result<()> {
    let deploy = root.join("deploy");
    let mut files = Vec::new();
    yaml_files(&deploy, &mut files)?;
    files.sort();
    if files.is_empty() {
        bail!("no manifests under {}", deploy.display());
    }
    ensure_validator()?;

    let mut problems = Vec::new();
    let mut crd_documents = 0;
    for file in &files {
        crd_documents += check_structure(root, file, &mut problems)?;
    }
    let schema_checked = check_schemas(root, &files, &mut problems)?;
    let rendered = render_kustomizations(root, &files, &mut problems)?;

    println!(
        "manifests: {} files, {schema_checked} resources against the Kubernetes {KUBERNETES_VERSION} \
         schemas, {crd_documents} CRD/kustomize documents checked structurally, {rendered}",
        files.len()
    );
    if !problems.is_empty() {
        for problem in &problems {
            println!("  {problem}");
        }
        bail!("{} manifest problem(s)", problems.len());
    }
    Ok(())
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            yaml_files(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            out.push(path);
        }
    }
    Ok(())
}

fn ensure_validator() -> Result<()> {
    let version = Cmd::new(validator_python())
        .args(["-m", "kubernetes_validate", "--version"])
        .read()
        .context("kubernetes-validate is missing: run `cargo xtask setup`")?;
    if version.trim() != KUBERNETES_VALIDATE_VERSION {
        bail!(
            "kubernetes-validate {} found, {KUBERNETES_VALIDATE_VERSION} expected: run `cargo xtask setup`",
            version.trim()
        );
    }
    Ok(())
}

fn relative<'a>(root: &Path, path: &'a Path) -> &'a Path {
    path.strip_prefix(root).unwrap_or(path)
}

/// Checks what every document needs, and what the schemas cannot check for CRD kinds; returns how
/// many CRD or kustomize documents the file holds.
fn check_structure(root: &Path, file: &Path, problems: &mut Vec<String>) -> Result<usize> {
    let shown = relative(root, file).display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {shown}"))?;
    let documents = match YamlLoader::load_from_str(&text) {
        Ok(documents) => documents,
        Err(error) => {
            problems.push(format!("{shown}: not valid YAML: {error}"));
            return Ok(0);
        }
    };
    let mut crd_documents = 0;
    for (index, doc) in documents.iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let at = format!("{shown} (document {})", index + 1);
        let (Some(api_version), Some(kind)) = (doc["apiVersion"].as_str(), doc["kind"].as_str())
        else {
            problems.push(format!("{at}: apiVersion and kind are required"));
            continue;
        };
        let group = api_version.split_once('/').map_or("", |(group, _)| group);
        let crd_kinds = CRD_KINDS
            .iter()
            .find(|(crd_group, _)| *crd_group == group)
            .map(|(_, kinds)| *kinds);
        if kind == "Kustomization" {
            crd_documents += 1;
            check_kustomization(file, doc, &at, problems);
            continue;
        }
        if doc["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{at}: {kind} has no metadata.name"));
        }
        if kind == "DaemonSet" {
            check_daemonset(doc, &at, problems);
        }
        if let Some(kinds) = crd_kinds {
            crd_documents += 1;
            if !kinds.contains(&kind) {
                problems.push(format!("{at}: unknown kind {kind} in {group}"));
            }
            if doc["spec"].as_hash().is_none() {
                problems.push(format!("{at}: {kind} needs a spec mapping"));
            }
        }
    }
    Ok(crd_documents)
}

/// What keeps the agent's DaemonSet up, which no schema checks: probes and the scrape annotation
/// on declared ports, the downward-API variables the agent reads, termination grace longer than
/// the drain, no CPU limit (throttling would slow every enrolled pod) and a memory limit.
fn check_daemonset(doc: &Yaml, at: &str, problems: &mut Vec<String>) {
    let pod = &doc["spec"]["template"];
    let spec = &pod["spec"];
    let grace = spec["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
    for container in spec["containers"].as_vec().into_iter().flatten() {
        let name = container["name"].as_str().unwrap_or("?");
        let at = format!("{at}: container {name}");
        let ports: Vec<(&str, i64)> = container["ports"]
            .as_vec()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or(""),
                    p["containerPort"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let port = &container[probe]["httpGet"]["port"];
            let declared = match port {
                Yaml::String(n) => ports.iter().any(|(name, _)| name == n),
                Yaml::Integer(n) => ports.iter().any(|(_, p)| p == n),
                _ => true,
            };
            if !declared {
                problems.push(format!(
                    "{at}: {probe} uses port {port:?}, which is not declared"
                ));
            }
        }
        let scrape = pod["metadata"]["annotations"]["prometheus.io/port"].as_str();
        if let Some(port) = scrape
            && !ports.iter().any(|(_, p)| p.to_string() == port)
        {
            problems.push(format!(
                "{at}: prometheus.io/port {port} is not a declared port"
            ));
        }
        let env: Vec<&str> = container["env"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter(|e| !e["valueFrom"]["fieldRef"].is_badvalue())
            .filter_map(|e| e["name"].as_str())
            .collect();
        let args: Vec<&str> = container["args"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(Yaml::as_str)
            .collect();
        if args.contains(&"run") {
            for var in ["NODE_NAME", "POD_NAME", "POD_NAMESPACE"] {
                if !env.contains(&var) {
                    problems.push(format!("{at}: {var} is not set from the downward API"));
                }
            }
            match drain_seconds(&args) {
                Some(drain) if grace > drain => {}
                Some(drain) => problems.push(format!(
                    "{at}: terminationGracePeriodSeconds {grace} must exceed --drain-timeout ({drain}s)"
                )),
                None => problems.push(format!("{at}: --drain-timeout is not given")),
            }
        }
        let limits = &container["resources"]["limits"];
        if !limits["cpu"].is_badvalue() {
            problems.push(format!(
                "{at}: a CPU limit throttles the data path; request CPU only"
            ));
        }
        if limits["memory"].is_badvalue() {
            problems.push(format!("{at}: no memory limit"));
        }
    }
}

/// `--drain-timeout` in seconds, for values like `30s` or `1m`.
fn drain_seconds(args: &[&str]) -> Option<i64> {
    let value = args
        .iter()
        .skip_while(|a| **a != "--drain-timeout")
        .nth(1)?;
    let (number, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = number.parse().ok()?;
    match unit {
        "s" => Some(n),
        "m" => Some(n * 60),
        _ => None,
    }
}

/// Every file a kustomization lists must exist, so the base renders even where kubectl is absent.
fn check_kustomization(file: &Path, doc: &Yaml, at: &str, problems: &mut Vec<String>) {
    let dir = file.parent().unwrap_or(Path::new("."));
    let listed = ["resources", "patches", "components"]
        .iter()
        .filter_map(|key| doc[*key].as_vec())
        .flatten();
    for entry in listed {
        let path = entry.as_str().or_else(|| entry["path"].as_str());
        if let Some(path) = path
            && !dir.join(path).exists()
        {
            problems.push(format!("{at}: lists {path}, which does not exist"));
        }
    }
}

/// Runs the schema validator over `files`; returns how many resources it checked against a schema.
fn check_schemas(root: &Path, files: &[PathBuf], problems: &mut Vec<String>) -> Result<usize> {
    let (succeeded, output) = Cmd::new(validator_python())
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
        ])
        .arg(KUBERNETES_VERSION)
        .args(files.iter().map(|file| relative(root, file)))
        .current_dir(root)
        .read_all()?;
    let mut checked = 0;
    let mut errors = 0;
    for line in output.lines() {
        if line.starts_with("INFO ") {
            checked += 1;
        } else if line.starts_with("ERROR ") {
            checked += 1;
            errors += 1;
            problems.push(line.to_owned());
        } else if let Some(warning) = line.strip_prefix("WARN ") {
            if !is_known_crd_warning(warning) {
                errors += 1;
                problems.push(line.to_owned());
            }
        } else if !line.trim().is_empty() {
            problems.push(format!("kubernetes-validate: {line}"));
            errors += 1;
        }
    }
    if !succeeded && errors == 0 {
        problems.push(format!("kubernetes-validate failed: {}", output.trim()));
    }
    Ok(checked)
}

/// The validator only warns when it has no schema for a kind; that is expected for the CRD kinds
/// listed above and a real problem (a typo in apiVersion or kind) for anything else.
fn is_known_crd_warning(warning: &str) -> bool {
    let Some((_, rest)) = warning.split_once("Couldn't find schema for kind ") else {
        return false;
    };
    let mut words = rest.split_whitespace();
    let kind = words.next().unwrap_or_default();
    let api_version = words
        .skip_while(|word| *word != "version")
        .nth(1)
        .unwrap_or_default();
    let group = api_version.split_once('/').map_or("", |(group, _)| group);
    CRD_KINDS
        .iter()
        .any(|(crd_group, kinds)| *crd_group == group && kinds.contains(&kind))
}

/// Renders each kustomization with `kubectl kustomize` and validates the output; a notice, not a
/// failure, when kubectl is absent (the files were validated one by one already).
fn render_kustomizations(
    root: &Path,
    files: &[PathBuf],
    problems: &mut Vec<String>,
) -> Result<String> {
    let kustomizations: Vec<&Path> = files
        .iter()
        .filter(|file| {
            file.file_name()
                .is_some_and(|name| name == "kustomization.yaml")
        })
        .filter_map(|file| file.parent())
        .collect();
    if which::which("kubectl").is_err() {
        return Ok(format!(
            "{} kustomization(s) not rendered (no kubectl; files validated one by one)",
            kustomizations.len()
        ));
    }
    let out_dir = std::env::temp_dir().join(format!("sockmesh-kustomize-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir)?;
    let mut rendered = Vec::new();
    for dir in &kustomizations {
        let shown = relative(root, dir).display().to_string();
        match Cmd::new("kubectl").arg("kustomize").arg(dir).read() {
            Ok(yaml) => {
                let out = out_dir.join(format!("{}.rendered.yaml", shown.replace('/', "_")));
                std::fs::write(&out, yaml)?;
                rendered.push(out);
            }
            Err(error) => problems.push(format!("{shown}: kustomize failed: {error:#}")),
        }
    }
    let checked = if rendered.is_empty() {
        0
    } else {
        check_schemas(&out_dir, &rendered, problems)?
    };
    std::fs::remove_dir_all(&out_dir)?;
    Ok(format!(
        "{} kustomization(s) rendered ({checked} resources validated)",
        rendered.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_schema_is_fine_only_for_known_crd_kinds() {
        let warning = |kind: &str, api: &str| {
            format!(
                "x.yaml Couldn't find schema for kind {kind} with api version {api} for kubernetes version 1.30"
            )
        };
        assert!(is_known_crd_warning(&warning(
            "PeerAuthentication",
            "security.istio.io/v1"
        )));
        assert!(is_known_crd_warning(&warning(
            "Kustomization",
            "kustomize.config.k8s.io/v1beta1"
        )));
        assert!(!is_known_crd_warning(&warning("Namespace", "v2")));
        assert!(!is_known_crd_warning(&warning(
            "DestinationRuel",
            "networking.istio.io/v1"
        )));
        assert!(!is_known_crd_warning("x.yaml some other warning"));
    }

    fn problems_in(yaml: &str) -> Vec<String> {
        static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("xtask-validate-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{:x}.yaml", yaml.len()));
        std::fs::write(&file, yaml).unwrap();
        let mut problems = Vec::new();
        check_structure(&dir, &file, &mut problems).unwrap();
        std::fs::remove_file(&file).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        problems
    }

    #[test]
    fn the_daemonset_contract_is_checked() {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/daemonset.yaml"),
        )
        .unwrap();
        assert_eq!(problems_in(&shipped), Vec::<String>::new());
        let broken = shipped
            .replace("port: readiness", "port: admin")
            .replace(
                "terminationGracePeriodSeconds: 45",
                "terminationGracePeriodSeconds: 30",
            )
            .replace(
                "            - name: POD_NAME\n",
                "            - name: OTHER\n",
            )
            .replace(
                "prometheus.io/port: \"15020\"",
                "prometheus.io/port: \"9090\"",
            )
            .replace("              memory: 1Gi", "              cpu: \"1\"");
        let problems = problems_in(&broken);
        for expected in [
            "readinessProbe uses port",
            "livenessProbe uses port",
            "must exceed --drain-timeout (30s)",
            "POD_NAME is not set",
            "prometheus.io/port 9090",
            "a CPU limit",
            "no memory limit",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:#?}"
            );
        }
        assert_eq!(drain_seconds(&["--drain-timeout", "2m"]), Some(120));
    }

    #[test]
    fn structure_of_crd_documents_is_checked() {
        let good = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
                    metadata: {name: default}\nspec: {mtls: {mode: STRICT}}\n";
        assert_eq!(problems_in(good), Vec::<String>::new());
        let no_spec =
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\n";
        assert_eq!(problems_in(no_spec).len(), 1);
        let no_name = "apiVersion: v1\nkind: Namespace\nmetadata: {}\n---\n";
        assert_eq!(problems_in(no_name).len(), 1);
        let kustomization = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                             resources: [absent.yaml]\n";
        assert_eq!(problems_in(kustomization).len(), 1);
    }
}
