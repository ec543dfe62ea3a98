//! Output: tables for humans (comfy-table), JSON for scripts.

use comfy_table::Table;
use serde::Serialize;

/// How to print results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned table.
    Table,
    /// Pretty-printed JSON.
    Json,
}

/// A two-column Field/Value table.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let mut t = Table::new();
    // No dynamic wrapping: serial consoles report no width.
    t.set_header(["Field", "Value"]);
    for (k, v) in rows {
        t.add_row([k.to_string(), v.clone()]);
    }
    t.to_string()
}

/// JSON text of `value`.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)?)
}

/// A table with a header row.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.set_header(header.iter().map(|h| h.to_string()));
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}
