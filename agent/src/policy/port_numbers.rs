//! Port numbers of DestinationRule `trafficPolicy.portLevelSettings[].port.number` (also under
//! `subsets[].trafficPolicy`), checked on the raw YAML before the typed decode, because the model's
//! `u16` cannot hold the values worth reporting. Istio's validation rejects anything outside
//! 1-65535; sockmesh reports it as [`Code::InvalidPortNumber`] and, for `sockmesh check`, names the
//! resource and the field:
//!
//! - `0`: a warning. It decodes, but matches no connection's port, so the entry never applies.
//! - negative or above 65535: an error. The rule cannot be represented and is not loaded (the
//!   generic parse error it would otherwise cause is not reported a second time).

use serde_norway::Value;

use super::diagnostic::{Code, Diagnostic, Location};

/// Findings for one raw object of `group`/`kind` found at `location`.
pub(super) fn findings(
    group: &str,
    kind: &str,
    value: &Value,
    location: &Location,
) -> Vec<Diagnostic> {
    if (group, kind) != ("networking.istio.io", "DestinationRule") {
        return Vec::new();
    }
    let Some(spec) = value.get("spec") else {
        return Vec::new();
    };
    let mut policies = vec![("spec.trafficPolicy".to_owned(), spec.get("trafficPolicy"))];
    let subsets = spec.get("subsets").and_then(Value::as_sequence);
    for (i, subset) in subsets.into_iter().flatten().enumerate() {
        policies.push((
            format!("spec.subsets[{i}].trafficPolicy"),
            subset.get("trafficPolicy"),
        ));
    }
    let mut out = Vec::new();
    for (path, policy) in policies {
        let settings = policy
            .and_then(|p| p.get("portLevelSettings"))
            .and_then(Value::as_sequence);
        for (i, setting) in settings.into_iter().flatten().enumerate() {
            let number = setting.get("port").and_then(|p| p.get("number"));
            if let Some(finding) = number.and_then(|n| {
                check_number(
                    n,
                    &format!("{path}.portLevelSettings[{i}].port.number"),
                    location,
                )
            }) {
                out.push(finding);
            }
        }
    }
    out
}

/// A finding when `number` is an integer outside 1-65535; other types are left to the decoder.
fn check_number(number: &Value, field: &str, location: &Location) -> Option<Diagnostic> {
    let value = number
        .as_i64()
        .map(i128::from)
        .or_else(|| number.as_u64().map(i128::from))?;
    if (1..=i128::from(u16::MAX)).contains(&value) {
        return None;
    }
    // Inside a `kind: List` the object's own location already names `items[N]`.
    let field = match &location.field {
        Some(item) => format!("{item}.{field}"),
        None => field.to_owned(),
    };
    let at = Location {
        field: Some(field),
        ..location.clone()
    };
    Some(if value == 0 {
        Diagnostic::warning(
            Code::InvalidPortNumber,
            at,
            "port number 0 matches no port, so this portLevelSettings entry never applies \
             (Istio rejects it: ports are 1-65535)",
        )
    } else {
        Diagnostic::error(
            Code::InvalidPortNumber,
            at,
            format!("port number {value} is outside 1-65535; the DestinationRule is not loaded"),
        )
    })
}

#[cfg(test)]
mod tests {
    use crate::policy::check::check;
    use crate::policy::diagnostic::{Code, Severity};
    use crate::policy::load::load_str;
    use crate::policy::{MeshSettings, Snapshot};

    fn rule(numbers: &[&str]) -> String {
        let settings: String = numbers
            .iter()
            .map(|n| {
                format!("    - port:\n        number: {n}\n      tls:\n        mode: DISABLE\n")
            })
            .collect();
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata:\n  name: ports\n  namespace: test1\n\
             spec:\n  host: httpbin.test2.svc.cluster.local\n  trafficPolicy:\n    \
             portLevelSettings:\n{settings}"
        )
    }

    #[test]
    fn port_zero_is_a_check_warning_naming_resource_and_field() {
        let report = load_str(&rule(&["8000", "0"]));
        assert!(!report.has_errors(), "{:?}", report.diagnostics);
        assert_eq!(report.resources.destination_rules.len(), 1);
        let snap = Snapshot::from_report(report, MeshSettings::default()).unwrap();
        let findings: Vec<_> = check(&snap)
            .into_iter()
            .filter(|d| d.code == Code::InvalidPortNumber)
            .collect();
        assert_eq!(findings.len(), 1, "{findings:?}");
        let line = findings[0].to_string();
        assert_eq!(findings[0].severity, Severity::Warning);
        assert!(
            line.starts_with("Warning [SM1012] (DestinationRule test1/ports)")
                && line.contains("field spec.trafficPolicy.portLevelSettings[1].port.number")
                && line.contains("port number 0 matches no port"),
            "{line}"
        );
    }

    #[test]
    fn out_of_range_ports_are_one_error_each_and_the_rule_is_not_loaded() {
        let report = load_str(&rule(&["70000", "-1", "443"]));
        assert!(report.resources.destination_rules.is_empty());
        let lines: Vec<String> = report.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("Error [SM1012] (DestinationRule test1/ports)")
                && lines[0].contains("portLevelSettings[0].port.number")
                && lines[0].contains("port number 70000 is outside 1-65535"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("portLevelSettings[1].port.number")
                && lines[1].contains("port number -1 is outside"),
            "{lines:?}"
        );
    }

    #[test]
    fn subsets_and_list_items_are_located() {
        let yaml = "apiVersion: v1\nkind: List\nitems:\n\
            - apiVersion: networking.istio.io/v1beta1\n  kind: DestinationRule\n  \
              metadata: {name: sub, namespace: test1}\n  spec:\n    host: httpbin\n    \
              subsets:\n    - name: v1\n      trafficPolicy:\n        portLevelSettings:\n        \
              - port: {number: 65536}\n";
        let report = load_str(yaml);
        let lines: Vec<String> = report.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains(
                "field items[0].spec.subsets[0].trafficPolicy.portLevelSettings[0].port.number"
            ),
            "{lines:?}"
        );
    }
}
