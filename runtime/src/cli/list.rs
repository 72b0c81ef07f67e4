//! `ward list [--format table|json] [-q]`, with runc's columns and JSON fields.

use crate::cli::CliError;
use crate::container::Context;

pub fn execute(ctx: &Context, args: &liboci_cli::List) -> Result<i32, CliError> {
    let mut states = Vec::new();
    for id in ctx.store.ids()? {
        // A container deleted or half-created meanwhile is simply not listed.
        if let Ok(state) = ctx.store.load(&id) {
            states.push(state.oci_state());
        }
    }
    if args.quiet {
        for state in &states {
            println!("{}", state["id"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    match args.format.as_str() {
        "json" => {
            let text = serde_json::to_string(&states).map_err(|e| CliError::Io {
                what: "formatting the list".into(),
                source: e.into(),
            })?;
            println!("{text}");
        }
        "table" => print!("{}", table(&states)),
        other => {
            return Err(CliError::Usage(format!(
                "invalid format option {other:?}: expected table or json"
            )))
        }
    }
    Ok(0)
}

/// Columns padded to their widest cell plus three spaces, like runc's tabwriter output.
fn table(states: &[serde_json::Value]) -> String {
    let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"];
    let mut rows = vec![header.map(str::to_string).to_vec()];
    for s in states {
        let field = |key: &str| match &s[key] {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let owner = match field("owner").as_str() {
            "" => "root".to_string(),
            owner => owner.to_string(),
        };
        rows.push(vec![
            field("id"),
            field("pid"),
            field("status"),
            field("bundle"),
            field("created"),
            owner,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let states = vec![serde_json::json!({
            "id": "web", "pid": 42, "status": "running", "bundle": "/b",
            "created": "2026-01-01T00:00:00Z", "owner": ""
        })];
        let text = table(&states);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID    PID   STATUS    BUNDLE   CREATED"));
        assert!(lines[1].starts_with("web   42    running   /b       2026-01-01T00:00:00Z   root"));
    }
}
