//! Reading an OCI bundle: its config.json and its root filesystem.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BundleError {
    #[error("bundle {0} does not exist")]
    Missing(PathBuf),
    #[error("bundle {bundle}: config.json does not exist")]
    MissingConfig { bundle: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed {path}: {message} at line {line}, column {column}")]
    Malformed {
        path: PathBuf,
        message: String,
        line: usize,
        column: usize,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("bundle {bundle}: root filesystem {rootfs} does not exist")]
    MissingRootfs { bundle: PathBuf, rootfs: PathBuf },
}

/// A loaded bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute path of the bundle directory.
    pub path: PathBuf,
    pub spec: Spec,
    /// Absolute host path of the root filesystem.
    pub rootfs: PathBuf,
}

impl Bundle {
    pub fn load(path: &Path) -> Result<Bundle, BundleError> {
        let path = std::fs::canonicalize(path).map_err(|_| BundleError::Missing(path.into()))?;
        let config_path = path.join("config.json");
        let text = match std::fs::read(&config_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BundleError::MissingConfig { bundle: path })
            }
            Err(source) => {
                return Err(BundleError::Read {
                    path: config_path,
                    source,
                })
            }
        };
        let spec = parse_spec(&text).map_err(|e| match e {
            SpecParseError::Json {
                message,
                line,
                column,
            } => BundleError::Malformed {
                path: config_path.clone(),
                message,
                line,
                column,
            },
            SpecParseError::Invalid(message) => BundleError::Invalid {
                path: config_path.clone(),
                message,
            },
        })?;
        let root = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| BundleError::Invalid {
                path: config_path.clone(),
                message: "root.path is required".into(),
            })?;
        let rootfs = if root.is_absolute() {
            root
        } else {
            path.join(root)
        };
        if !rootfs.is_dir() {
            return Err(BundleError::MissingRootfs {
                bundle: path,
                rootfs,
            });
        }
        Ok(Bundle { path, spec, rootfs })
    }
}

#[derive(Debug, PartialEq)]
pub enum SpecParseError {
    Json {
        message: String,
        line: usize,
        column: usize,
    },
    Invalid(String),
}

/// Parses config.json; a syntax or type error says where it is.
pub fn parse_spec(text: &[u8]) -> Result<Spec, SpecParseError> {
    let spec: Spec = serde_json::from_slice(text).map_err(|e| SpecParseError::Json {
        message: strip_position(&e.to_string()),
        line: e.line(),
        column: e.column(),
    })?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| SpecParseError::Invalid("process is required".into()))?;
    match process.args() {
        Some(args) if !args.is_empty() => {}
        _ => {
            return Err(SpecParseError::Invalid(
                "process.args must not be empty".into(),
            ))
        }
    }
    Ok(spec)
}

/// serde_json appends " at line L column C"; we print the position ourselves.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_bundle(dir: &Path, config: &str, with_rootfs: bool) {
        std::fs::write(dir.join("config.json"), config).unwrap();
        if with_rootfs {
            std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        }
    }

    fn default_config() -> String {
        serde_json::to_string(&Spec::default()).unwrap()
    }

    #[test]
    fn loads_a_default_spec_bundle() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), &default_config(), true);
        let bundle = Bundle::load(dir.path()).unwrap();
        assert_eq!(bundle.rootfs, bundle.path.join("rootfs"));
    }

    #[test]
    fn malformed_json_says_where() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(
            dir.path(),
            "{\n  \"ociVersion\": \"1.0.2\",\n  \"process\": {,\n}",
            true,
        );
        let err = Bundle::load(dir.path()).unwrap_err();
        match &err {
            BundleError::Malformed { line, .. } => assert_eq!(*line, 3),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("line 3, column"), "{err}");
    }

    #[test]
    fn missing_pieces_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Bundle::load(&dir.path().join("nope")),
            Err(BundleError::Missing(_))
        ));
        assert!(matches!(
            Bundle::load(dir.path()),
            Err(BundleError::MissingConfig { .. })
        ));
        write_bundle(dir.path(), &default_config(), false);
        assert!(matches!(
            Bundle::load(dir.path()),
            Err(BundleError::MissingRootfs { .. })
        ));
    }

    #[test]
    fn a_spec_without_args_is_invalid() {
        let err = parse_spec(br#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0},"args":[]},"root":{"path":"rootfs"}}"#).unwrap_err();
        assert_eq!(
            err,
            SpecParseError::Invalid("process.args must not be empty".into())
        );
    }
}
