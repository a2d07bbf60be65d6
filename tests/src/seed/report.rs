//! A step's observations against its expectations, printable as a connectivity matrix.

use std::fmt;

use super::probe::{Observed, Outcome};
use super::steps::{Cell, Expect};

/// One probed cell.
#[derive(Debug, Clone)]
pub struct CellReport {
    pub cell: Cell,
    pub observed: Observed,
}

impl CellReport {
    /// Wire mode, success and (when expected) the refusal reason all match.
    pub fn passed(&self) -> bool {
        let Expect { wire, ok, reason } = self.cell.expect;
        let outcome_ok = match (&self.observed.outcome, ok) {
            (Outcome::Ok, true) => true,
            (Outcome::Refused { reason: got, .. }, false) => {
                reason.is_none() || got.as_deref() == reason
            }
            _ => false,
        };
        outcome_ok && self.observed.wire == wire
    }

    /// Column header: `httpbin.test1:8000`.
    fn column(&self) -> String {
        format!("{}:{}", self.cell.service.host(), self.cell.port)
    }
}

fn expected(e: &Expect) -> String {
    match (e.ok, e.reason) {
        (true, _) => format!("{} ok", e.wire),
        (false, Some(reason)) => format!("{} refused ({reason})", e.wire),
        (false, None) => format!("{} refused", e.wire),
    }
}

/// Everything one step observed.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub name: &'static str,
    pub title: &'static str,
    pub cells: Vec<CellReport>,
}

impl StepReport {
    pub fn passed(&self) -> bool {
        self.cells.iter().all(CellReport::passed)
    }

    /// Cells that did not behave as expected.
    pub fn failures(&self) -> Vec<&CellReport> {
        self.cells.iter().filter(|c| !c.passed()).collect()
    }

    /// Panics with the whole matrix unless every cell passed (for tests).
    pub fn assert_passed(&self) {
        assert!(self.passed(), "step {} failed:\n{self}", self.name);
    }
}

const FIRST: usize = 13;
const WIDTH: usize = 36;

/// The matrix (clients down, `service:port` across; `✗` marks a mismatch), then one line per
/// mismatch with what was expected.
impl fmt::Display for StepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut columns: Vec<String> = Vec::new();
        let mut rows: Vec<&str> = Vec::new();
        for c in &self.cells {
            if !columns.contains(&c.column()) {
                columns.push(c.column());
            }
            if !rows.contains(&c.cell.client) {
                rows.push(c.cell.client);
            }
        }
        write!(f, "{:FIRST$}", "")?;
        for col in &columns {
            write!(f, " {col:WIDTH$}")?;
        }
        writeln!(f)?;
        for row in rows {
            write!(f, "{row:FIRST$}")?;
            for col in &columns {
                let text = self
                    .cells
                    .iter()
                    .find(|c| c.cell.client == row && &c.column() == col)
                    .map_or_else(String::new, |c| {
                        let mark = if c.passed() { "✓" } else { "✗" };
                        format!("{mark} {}", c.observed)
                    });
                write!(f, " {text:WIDTH$}")?;
            }
            writeln!(f)?;
        }
        for c in self.failures() {
            writeln!(
                f,
                "  ✗ {} -> {}: expected {}, saw {}",
                c.cell.client,
                c.column(),
                expected(&c.cell.expect),
                c.observed
            )?;
        }
        Ok(())
    }
}
