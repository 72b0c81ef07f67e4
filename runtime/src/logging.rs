//! Runtime logs, shaped like runc's: `--log FILE` (default stderr), `--log-format text|json`
//! (json lines carry `level`, `msg` and `time`, which conmon and containerd's shim read back
//! to report a failed command), `--debug` for debug level.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use slog::{o, Drain, FnValue, Level, LevelFilter, Logger, PushFnValue};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LogError {
    #[error("cannot open log file {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown log format {0:?}: expected text or json")]
    Format(String),
    #[error("unknown log level {0:?}: expected trace, debug, info, warning, error or critical")]
    Level(String),
}

pub fn parse_level(name: &str) -> Result<Level, LogError> {
    match name {
        "warn" => Ok(Level::Warning),
        other => other
            .parse::<Level>()
            .map_err(|_| LogError::Level(other.to_string())),
    }
}

/// Builds the root logger. Writes are synchronous (a Mutex drain): `ward` is short-lived and
/// must not lose the last lines when it exits with an error.
pub fn build(path: Option<&Path>, format: Option<&str>, level: Level) -> Result<Logger, LogError> {
    let sink: Box<dyn std::io::Write + Send> = match path {
        Some(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| LogError::Open {
                    path: path.display().to_string(),
                    source,
                })?,
        ),
        None => Box::new(std::io::stderr()),
    };
    let drain: Box<dyn Drain<Ok = (), Err = slog::Never> + Send> = match format.unwrap_or("text")
    {
        "json" => Box::new(
            slog_json::Json::new(sink)
                .add_key_value(o!(
                    "level" => FnValue(|record| record.level().as_str().to_lowercase()),
                    "msg" => PushFnValue(|record, ser| ser.emit(record.msg())),
                    "time" => FnValue(|_| humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()),
                ))
                .build()
                .fuse(),
        ),
        "text" => {
            let decorator = slog_term::PlainSyncDecorator::new(sink);
            Box::new(slog_term::FullFormat::new(decorator).build().fuse())
        }
        other => return Err(LogError::Format(other.to_string())),
    };
    let drain = Mutex::new(LevelFilter::new(drain, level)).fuse();
    Ok(Logger::root(drain, o!()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use slog::{error, info};

    #[test]
    fn json_lines_carry_level_msg_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let log = build(Some(&path), Some("json"), Level::Info).unwrap();
        info!(log, "hello"; "container" => "c1");
        error!(log, "boom");
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["msg"], "hello");
        assert_eq!(lines[0]["level"], "info");
        assert_eq!(lines[0]["container"], "c1");
        assert!(lines[0]["time"].as_str().unwrap().contains('T'));
        assert_eq!(lines[1]["level"], "error");
    }

    #[test]
    fn debug_is_filtered_at_info() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.txt");
        let log = build(Some(&path), None, Level::Info).unwrap();
        slog::debug!(log, "hidden");
        info!(log, "shown");
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("shown") && !text.contains("hidden"));
    }

    #[test]
    fn bad_format_and_level_are_errors() {
        assert!(matches!(
            build(None, Some("xml"), Level::Info),
            Err(LogError::Format(_))
        ));
        assert!(matches!(parse_level("loud"), Err(LogError::Level(_))));
        assert_eq!(parse_level("warn").unwrap(), Level::Warning);
        assert_eq!(parse_level("debug").unwrap(), Level::Debug);
    }
}
