//! What a scenario prints: a table for people, then exactly one JSON line for scripts.

use serde_json::{Map, Value};
use std::fmt::Write as _;

/// Rows for the table and fields for the JSON line, built side by side.
#[derive(Debug, Default)]
pub struct Report {
    scenario: String,
    rows: Vec<(String, String)>,
    json: Map<String, Value>,
}

impl Report {
    pub fn new(scenario: &str) -> Report {
        let mut json = Map::new();
        json.insert("scenario".into(), Value::from(scenario));
        Report {
            scenario: scenario.to_owned(),
            rows: Vec::new(),
            json,
        }
    }

    /// A table row only.
    pub fn row(&mut self, label: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.rows.push((label.into(), value.into()));
        self
    }

    /// A JSON field only.
    pub fn field(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.json.insert(key.to_owned(), value.into());
        self
    }

    /// Both: a table row and a JSON field.
    pub fn both(
        &mut self,
        label: impl Into<String>,
        shown: impl Into<String>,
        key: &str,
        value: impl Into<Value>,
    ) -> &mut Self {
        self.row(label, shown).field(key, value)
    }

    pub fn json(&self) -> &Map<String, Value> {
        &self.json
    }

    /// The table: a title line, then one aligned `label  value` line per row.
    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let mut out = format!("== breeze-bench {} ==\n", self.scenario);
        for (label, value) in &self.rows {
            let _ = writeln!(out, "  {label:<width$}  {value}");
        }
        out
    }

    /// The JSON line: one object, no newline inside.
    pub fn json_line(&self) -> String {
        Value::Object(self.json.clone()).to_string()
    }

    pub fn print(&self) {
        print!("{}", self.table());
        println!("{}", self.json_line());
    }
}

/// Rounds to `digits` decimals, for JSON figures that are measurements, not identities.
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_line_is_one_object_on_one_line() {
        let mut r = Report::new("chat");
        r.both("delivered", "60000 msg/s", "delivered_per_s", 60000.0)
            .field("latency", serde_json::json!({"p99_us": 800}))
            .row("note", "a\nb");
        let line = r.json_line();
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["scenario"], "chat");
        assert_eq!(v["delivered_per_s"], 60000.0);
        assert_eq!(v["latency"]["p99_us"], 800);
        assert!(v.get("note").is_none());
        let table = r.table();
        assert!(table.starts_with("== breeze-bench chat =="));
        assert!(table.contains("  delivered  60000 msg/s"));
    }

    #[test]
    fn rounding() {
        assert_eq!(round(1.23456, 2), 1.23);
        assert_eq!(round(2.5, 0), 3.0);
    }
}
