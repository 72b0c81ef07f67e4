//! The agent's settings, read from the kernel command line (the only configuration channel a
//! PID 1 in an initramfs has). Recognised words:
//!
//! - `agent.log=debug|info|warning|warn|error|critical|trace`: log level (default `info`);
//! - `ward.debug`: the same as `agent.log=debug`;
//! - `agent.log_format=json|text`: JSON lines (default) or compact `key=value` text;
//! - `agent.hostname=NAME`: the guest's hostname (default `ward`).
//!
//! Everything else on the command line belongs to the kernel and is ignored.

use slog::Level;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub log_level: Level,
    pub log_format: LogFormat,
    pub hostname: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            log_level: Level::Info,
            log_format: LogFormat::Json,
            hostname: "ward".to_string(),
        }
    }
}

/// Longest hostname Linux accepts (HOST_NAME_MAX).
const HOST_NAME_MAX: usize = 64;

/// Parses `/proc/cmdline`; returns the options and one message per word that was meant for
/// the agent but could not be understood (logged once logging is up).
pub fn parse_cmdline(cmdline: &str) -> (Options, Vec<String>) {
    let mut options = Options::default();
    let mut problems = Vec::new();
    for word in cmdline.split_ascii_whitespace() {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        match (key, value) {
            ("ward.debug", None) => options.log_level = Level::Debug,
            ("agent.log", Some(v)) => match parse_level(v) {
                Some(level) => options.log_level = level,
                None => problems.push(format!("unknown log level {v:?} in {word:?}")),
            },
            ("agent.log_format", Some("json")) => options.log_format = LogFormat::Json,
            ("agent.log_format", Some("text")) => options.log_format = LogFormat::Text,
            ("agent.log_format", Some(v)) => {
                problems.push(format!("unknown log format {v:?} (json or text)"))
            }
            ("agent.hostname", Some(v)) => {
                if !v.is_empty()
                    && v.len() <= HOST_NAME_MAX
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    options.hostname = v.to_string();
                } else {
                    problems.push(format!("invalid hostname {v:?}"));
                }
            }
            (k, _) if k.starts_with("agent.") => {
                problems.push(format!("unknown agent option {word:?}"))
            }
            _ => {}
        }
    }
    (options, problems)
}

fn parse_level(value: &str) -> Option<Level> {
    Some(match value {
        "trace" => Level::Trace,
        "debug" => Level::Debug,
        "info" => Level::Info,
        "warn" | "warning" => Level::Warning,
        "error" => Level::Error,
        "critical" | "crit" => Level::Critical,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_nothing_is_said() {
        let (options, problems) = parse_cmdline("console=ttyS0 panic=-1 quiet\n");
        assert_eq!(options, Options::default());
        assert!(problems.is_empty());
    }

    #[test]
    fn reads_agent_words() {
        let (options, problems) =
            parse_cmdline("console=ttyS0 agent.log=warn agent.log_format=text agent.hostname=vm-1");
        assert_eq!(options.log_level, Level::Warning);
        assert_eq!(options.log_format, LogFormat::Text);
        assert_eq!(options.hostname, "vm-1");
        assert!(problems.is_empty());
        assert_eq!(parse_cmdline("ward.debug").0.log_level, Level::Debug);
    }

    #[test]
    fn reports_what_it_cannot_use() {
        let (options, problems) =
            parse_cmdline("agent.log=loud agent.hostname=a/b agent.colour=blue");
        assert_eq!(options, Options::default());
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
