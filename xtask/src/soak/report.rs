//! The soak's one table. A row is a figure; some rows are invariants the run asserts (the
//! security ones, and resources back to baseline), the rest are reported with what they should
//! be, so a failure today is visible without failing CI.
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// An invariant: the run fails when it does not hold.
    Asserted,
    /// A figure with a target, reported only.
    Reported,
    /// A figure without a target.
    Figure,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub measured: String,
    pub expected: String,
    pub ok: bool,
    pub check: Check,
}

#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    /// An invariant: fails the run unless it holds.
    pub fn assert(&mut self, id: &str, measured: String, expected: &str, ok: bool) {
        self.push(id, measured, expected, ok, Check::Asserted);
    }

    /// A figure with a target that is reported, not asserted.
    pub fn target(&mut self, id: &str, measured: String, expected: &str, ok: bool) {
        self.push(id, measured, expected, ok, Check::Reported);
    }

    pub fn figure(&mut self, id: &str, measured: String) {
        self.push(id, measured, "", true, Check::Figure);
    }

    /// A phase that could not be measured: a failed invariant (what it guards went unchecked).
    pub fn broken(&mut self, id: &str, error: &anyhow::Error) {
        self.push(
            id,
            format!("not measured: {error:#}"),
            "",
            false,
            Check::Asserted,
        );
    }

    fn push(&mut self, id: &str, measured: String, expected: &str, ok: bool, check: Check) {
        self.rows.push(Row {
            id: id.to_owned(),
            measured,
            expected: expected.to_owned(),
            ok,
            check,
        });
    }

    /// Ids of asserted rows that failed.
    pub fn failed_invariants(&self) -> Vec<&str> {
        self.rows
            .iter()
            .filter(|r| r.check == Check::Asserted && !r.ok)
            .map(|r| r.id.as_str())
            .collect()
    }

    /// The table, as Markdown.
    pub fn table(&self) -> String {
        let mut out = String::from("| row | measured | expected | verdict |\n|---|---|---|---|\n");
        for row in &self.rows {
            let verdict = match (row.check, row.ok) {
                (Check::Figure, _) => "",
                (Check::Asserted, true) => "ok (asserted)",
                (Check::Asserted, false) => "**FAIL** (asserted)",
                (Check::Reported, true) => "ok",
                (Check::Reported, false) => "FAIL (reported)",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {verdict} |",
                row.id, row.measured, row.expected
            );
        }
        out
    }
}

/// The value at quantile `q` (0..=1) of sorted `values`.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(index).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_invariant_fails_the_run_a_reported_figure_does_not() {
        let mut report = Report::default();
        report.assert("strict/plaintext", "1 of 50".into(), "0", false);
        report.assert("strict/no-eku", "0 of 50".into(), "0", true);
        report.target("burst/1000: agent RSS", "big".into(), "small", false);
        report.figure("memory per connection", "35 KiB".into());
        assert_eq!(report.failed_invariants(), ["strict/plaintext"]);
        let table = report.table();
        assert!(table.contains("| strict/plaintext | 1 of 50 | 0 | **FAIL** (asserted) |"));
        assert!(table.contains("| strict/no-eku | 0 of 50 | 0 | ok (asserted) |"));
        assert!(table.contains("| big | small | FAIL (reported) |"));
    }
}
