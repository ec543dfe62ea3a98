//! Output: tables for humans (comfy-table), JSON for scripts, or with
//! `-o value=FIELD[,FIELD...]` only the named fields' values, one line per
//! item, for shell scripts that want one number or name.

use anyhow::{bail, Result};
use comfy_table::Table;
use serde::Serialize;
use serde_json::Value;

/// How to print results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned table.
    Table,
    /// Pretty-printed JSON.
    Json,
    /// The values of these fields (dot-separated paths into the JSON, e.g.
    /// `counters.tx_bytes`), tab separated, one line per item.
    Value(Vec<String>),
}

/// What `-o` takes, for `--help` and errors.
pub const FORMATS: &str = "table, json or value=FIELD[,FIELD...]";

impl Format {
    /// Parses `-o`: `table`, `json` or `value=FIELD[,FIELD...]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "table" => Ok(Self::Table),
            "json" => Ok(Self::Json),
            _ => {
                let fields = text.strip_prefix("value=").ok_or_else(|| {
                    format!("unknown output format '{text}' (allowed: {FORMATS})")
                })?;
                let fields: Vec<String> = fields.split(',').map(str::to_string).collect();
                if fields
                    .iter()
                    .any(|f| f.is_empty() || f.split('.').any(str::is_empty))
                {
                    return Err(format!(
                        "'{text}' names an empty field (example: value=name,counters.tx_bytes)"
                    ));
                }
                Ok(Self::Value(fields))
            }
        }
    }

    /// Whether people read the output (a table or a sentence).
    pub fn is_table(&self) -> bool {
        *self == Self::Table
    }
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

/// `value` for scripts: pretty JSON, or with `-o value=...` the fields'
/// values, a line per item of a list. (Tables are each command's own.)
pub fn data<T: Serialize>(value: &T, format: &Format) -> Result<String> {
    match format {
        Format::Value(fields) => values(&serde_json::to_value(value)?, fields),
        Format::Table | Format::Json => Ok(serde_json::to_string_pretty(value)?),
    }
}

/// What a command that returns nothing prints: `{"<key>": "<name>"}` for
/// scripts (`-o value=<key>` gives the name), `sentence` for people.
pub fn done(format: &Format, key: &str, name: &str, sentence: String) -> Result<String> {
    if format.is_table() {
        Ok(sentence)
    } else {
        data(&serde_json::json!({ key: name }), format)
    }
}

fn values(json: &Value, fields: &[String]) -> Result<String> {
    let items = match json {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    let mut lines = Vec::with_capacity(items.len());
    for item in items {
        let row = fields
            .iter()
            .map(|f| field(item, f).map(plain))
            .collect::<Result<Vec<_>>>()?;
        lines.push(row.join("\t"));
    }
    Ok(lines.join("\n"))
}

/// The value at `path` (`a.b.0.c`: object keys and list indexes); below a
/// null (an attachment a volume does not have) everything is null.
fn field<'a>(item: &'a Value, path: &str) -> Result<&'a Value> {
    let mut at = item;
    for key in path.split('.') {
        at = match at {
            Value::Null => return Ok(at),
            Value::Object(map) => match map.get(key) {
                Some(v) => v,
                None => {
                    let known: Vec<&str> = map.keys().map(String::as_str).collect();
                    bail!(
                        "no field '{key}' (of '{path}') in the output; fields there: {}",
                        known.join(", ")
                    );
                }
            },
            Value::Array(list) => match key.parse::<usize>().ok().and_then(|i| list.get(i)) {
                Some(v) => v,
                None => bail!(
                    "'{key}' (of '{path}') is not an index of a list of {}",
                    list.len()
                ),
            },
            _ => bail!("'{path}': '{key}' is below a value that has no fields"),
        };
    }
    Ok(at)
}

/// A value as a shell script wants it: strings without quotes, null as
/// nothing, lists and objects as compact JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        _ => v.to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn value(fields: &str) -> Format {
        Format::parse(&format!("value={fields}")).unwrap()
    }

    #[test]
    fn formats_parse_and_say_what_is_allowed() {
        assert_eq!(Format::parse("table"), Ok(Format::Table));
        assert_eq!(Format::parse("json"), Ok(Format::Json));
        assert_eq!(
            value("name,counters.tx_bytes"),
            Format::Value(vec!["name".into(), "counters.tx_bytes".into()])
        );
        let e = Format::parse("yaml").unwrap_err();
        assert!(e.contains("table, json or value=FIELD"), "{e}");
        assert!(Format::parse("value=").is_err());
        assert!(Format::parse("value=a..b").is_err());
    }

    #[test]
    fn values_print_one_line_per_item() {
        let list = serde_json::json!([
            { "name": "web", "pid": 231, "volumes": ["db"], "attachment": null },
            { "name": "db", "pid": 232, "volumes": [], "attachment": { "fs": "ext4" } },
        ]);
        assert_eq!(
            data(&list, &value("name,pid")).unwrap(),
            "web\t231\ndb\t232"
        );
        assert_eq!(data(&list, &value("volumes")).unwrap(), "[\"db\"]\n[]");
        assert_eq!(data(&list, &value("attachment.fs")).unwrap(), "\next4");
        let e = data(&list, &value("pid.x")).unwrap_err().to_string();
        assert!(e.contains("no fields"), "{e}");
        let one = serde_json::json!({ "name": "web", "counters": { "tx_bytes": 1500 } });
        assert_eq!(data(&one, &value("counters.tx_bytes")).unwrap(), "1500");
        let e = data(&one, &value("counters.rx")).unwrap_err().to_string();
        assert!(e.contains("no field 'rx'") && e.contains("tx_bytes"), "{e}");
        let hist = serde_json::json!({ "latency_us_log2": [0, 7] });
        assert_eq!(data(&hist, &value("latency_us_log2.1")).unwrap(), "7");
    }

    #[test]
    fn done_is_a_sentence_or_data() {
        let s = || "volume db deleted".to_string();
        assert_eq!(done(&Format::Table, "deleted", "db", s()).unwrap(), s());
        assert_eq!(done(&value("deleted"), "deleted", "db", s()).unwrap(), "db");
        assert!(done(&Format::Json, "deleted", "db", s())
            .unwrap()
            .contains("\"deleted\": \"db\""));
    }
}
