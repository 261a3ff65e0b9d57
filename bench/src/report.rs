//! The Markdown table: medians of each figure for both appservices, their ratio, and the
//! target.

use std::fmt::Write;

use crate::stats::median;

/// What a figure must reach.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Trestle's figure divided by the null appservice's at least this.
    RatioAtLeast(f64),
    /// Trestle's figure divided by the null appservice's at most this (CPU per event).
    RatioAtMost(f64),
    /// Trestle's figure below this, in the row's unit.
    Below(f64),
}

/// One line of the table.
#[derive(Clone, Debug)]
pub struct Row {
    /// What is measured, with its unit.
    pub label: String,
    /// The null appservice's figure in each run.
    pub null: Vec<f64>,
    /// Trestle's figure in each run.
    pub trestle: Vec<f64>,
    /// Decimals to show.
    pub decimals: usize,
    /// The target, if the issue sets one.
    pub target: Option<Target>,
}

impl Row {
    /// A row without a target.
    pub fn new(label: impl Into<String>, decimals: usize) -> Self {
        Row {
            label: label.into(),
            null: Vec::new(),
            trestle: Vec::new(),
            decimals,
            target: None,
        }
    }

    /// Sets the target.
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// The ratio of the medians, Trestle ÷ null.
    pub fn ratio(&self) -> Option<f64> {
        let (null, trestle) = (median(&self.null)?, median(&self.trestle)?);
        (null != 0.0).then_some(trestle / null)
    }

    /// Whether the target is met; `None` without a target or figures.
    pub fn met(&self) -> Option<bool> {
        match self.target? {
            Target::RatioAtLeast(min) => Some(self.ratio()? >= min),
            Target::RatioAtMost(max) => Some(self.ratio()? <= max),
            Target::Below(max) => Some(median(&self.trestle)? < max),
        }
    }
}

/// `12345.6` as `12,346` (with `decimals` 0) or `12,345.6`.
pub fn number(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return "–".into();
    }
    let text = format!("{:.*}", decimals, value.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if value < 0.0 { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

fn cell(values: &[f64], decimals: usize) -> String {
    median(values).map_or("–".into(), |m| number(m, decimals))
}

/// The table, medians of the runs.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| figure | null appservice | Trestle | Trestle ÷ null | target | met |\n\
         |---|---:|---:|---:|---|---|\n",
    );
    for row in rows {
        let ratio = row.ratio().map_or("–".into(), |r| format!("{r:.2}"));
        let target = match row.target {
            Some(Target::RatioAtLeast(min)) => format!("ratio ≥ {min}"),
            Some(Target::RatioAtMost(max)) => format!("ratio ≤ {max}"),
            Some(Target::Below(max)) => format!("< {}", number(max, 0)),
            None => String::new(),
        };
        let met = match (row.met(), row.target) {
            (Some(true), _) => "yes".to_owned(),
            (Some(false), Some(Target::RatioAtLeast(min))) => format!(
                "**no**: {:.0}% of the target",
                100.0 * row.ratio().unwrap_or(0.0) / min
            ),
            (Some(false), Some(Target::RatioAtMost(max))) => format!(
                "**no**: {:.0}% over",
                100.0 * (row.ratio().unwrap_or(0.0) / max - 1.0)
            ),
            (Some(false), Some(Target::Below(max))) => format!(
                "**no**: {:.0}% over",
                100.0 * (median(&row.trestle).unwrap_or(0.0) / max - 1.0)
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {ratio} | {target} | {met} |",
            row.label,
            cell(&row.null, row.decimals),
            cell(&row.trestle, row.decimals),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(number(1234567.89, 0), "1,234,568");
        assert_eq!(number(999.0, 0), "999");
        assert_eq!(number(12345.678, 1), "12,345.7");
        assert_eq!(number(-1500.0, 0), "-1,500");
        assert_eq!(number(f64::NAN, 1), "–");
    }

    #[test]
    fn targets_are_judged_on_medians() {
        let mut row = Row::new("events/s", 0).target(Target::RatioAtLeast(0.6));
        row.null = vec![100.0, 1000.0, 110.0];
        row.trestle = vec![70.0, 0.0, 60.0];
        assert_eq!(row.ratio(), Some(60.0 / 110.0));
        assert_eq!(row.met(), Some(false));
        let mut memory = Row::new("idle MB", 1).target(Target::Below(15.0));
        memory.trestle = vec![9.0, 10.0, 30.0];
        assert_eq!(memory.met(), Some(true));
        let table = markdown(&[row, memory]);
        assert!(
            table.contains(
                "| events/s | 110 | 60 | 0.55 | ratio ≥ 0.6 | **no**: 91% of the target |"
            )
        );
        assert!(table.contains("| idle MB | – | 10.0 | – | < 15 | yes |"));
        let mut cpu = Row::new("CPU µs", 0).target(Target::RatioAtMost(1.7));
        cpu.null = vec![20.0, 22.0, 21.0];
        cpu.trestle = vec![40.0, 44.0, 42.0];
        assert_eq!(cpu.met(), Some(false));
        assert!(markdown(&[cpu.clone()]).contains("| 2.00 | ratio ≤ 1.7 | **no**: 18% over |"));
        cpu.trestle = vec![30.0, 36.0, 35.0];
        assert_eq!(cpu.met(), Some(true));
    }
}
