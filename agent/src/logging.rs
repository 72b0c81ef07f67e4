//! The agent's log: slog records written, one line each, to the guest's console (which the
//! host captures into a file), as JSON or as compact `key=value` text.
//!
//! Fork safety: the drain sits behind a mutex that any thread may hold, so code running in a
//! forked child must never log (see `container::spawn`); its errors travel back over a pipe
//! and are logged by the agent.

use std::fmt;
use std::io::Write;
use std::sync::Mutex;

use slog::{o, Drain, Key, Level, LevelFilter, Logger, OwnedKVList, Record, KV};

use crate::options::{LogFormat, Options};

/// Builds the root logger writing to `out`.
pub fn logger(options: &Options, out: Box<dyn Write + Send>) -> Logger {
    let level = options.log_level;
    match options.log_format {
        LogFormat::Json => {
            let json = slog_json::Json::new(out).add_default_keys().build();
            // A console that cannot be written must not take the agent down: write errors
            // are dropped (ignore_res), never turned into panics.
            let drain = LevelFilter::new(Mutex::new(json), level).ignore_res();
            Logger::root(drain, o!("agent" => ward_agent_protocol::AGENT_VERSION))
        }
        LogFormat::Text => {
            let out = Mutex::new(out);
            let drain = LevelFilter::new(TextDrain { out }, level).ignore_res();
            Logger::root(drain, o!())
        }
    }
}

/// `LEVEL message key=value ...`: short lines for a human reading the console.
struct TextDrain {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Drain for TextDrain {
    type Ok = ();
    type Err = std::io::Error;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), std::io::Error> {
        let mut line = format!("ward-agent {} {}", level_word(record.level()), record.msg());
        // slog hands key-value pairs over last first: collect, then write them in the
        // order the code wrote them. A value that cannot be formatted is left out rather
        // than losing the record.
        let mut pairs = Vec::new();
        let _ = record
            .kv()
            .serialize(record, &mut TextSerializer { pairs: &mut pairs });
        let mut context = Vec::new();
        let _ = values.serialize(
            record,
            &mut TextSerializer {
                pairs: &mut context,
            },
        );
        for pair in pairs.iter().rev().chain(context.iter().rev()) {
            line.push_str(pair);
        }
        line.push('\n');
        // One write per record under the lock, so that lines never interleave.
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(line.as_bytes())?;
        out.flush()
    }
}

fn level_word(level: Level) -> &'static str {
    match level {
        Level::Critical => "CRIT",
        Level::Error => "ERROR",
        Level::Warning => "WARN",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

struct TextSerializer<'a> {
    pairs: &'a mut Vec<String>,
}

impl slog::Serializer for TextSerializer<'_> {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments) -> slog::Result {
        let value = val.to_string();
        // Quote values a reader could not split on spaces.
        if value.is_empty() || value.contains([' ', '"', '=', '\n']) {
            self.pairs.push(format!(" {key}={value:?}"));
        } else {
            self.pairs.push(format!(" {key}={value}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slog::info;
    use std::sync::Arc;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn text_lines_quote_what_needs_it() {
        let out = Captured::default();
        let options = Options {
            log_format: LogFormat::Text,
            ..Options::default()
        };
        let log = logger(&options, Box::new(out.clone()));
        info!(log, "request"; "rpc" => "Check", "error" => "no such file");
        assert_eq!(
            out.text(),
            "ward-agent INFO request rpc=Check error=\"no such file\"\n"
        );
    }

    #[test]
    fn json_lines_parse_and_respect_the_level() {
        let out = Captured::default();
        let log = logger(&Options::default(), Box::new(out.clone()));
        slog::debug!(log, "hidden");
        info!(log, "shown"; "container" => "web");
        let text = out.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        let value: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(value["msg"], "shown");
        assert_eq!(value["container"], "web");
        assert_eq!(value["level"], "INFO");
    }
}
