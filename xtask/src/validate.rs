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
        let dir = std::env::temp_dir().join(format!("xtask-validate-{}", std::process::id()));
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
