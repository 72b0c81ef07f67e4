//! ward's configuration: TOML at /etc/ward/configuration.toml, or the file named by
//! `WARD_CONFIG`. A missing default file means built-in defaults; a missing file that
//! `WARD_CONFIG` names is an error (the user asked for it).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use ward_hypervisor::HypervisorConfig;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/ward/configuration.toml";
pub const CONFIG_ENV: &str = "WARD_CONFIG";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("configuration file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub hypervisor: HypervisorConfig,
    pub guest: GuestConfig,
    pub log: LogConfig,
    /// Where the file was read from; None for built-in defaults.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GuestConfig {
    /// The guest kernel: an ELF vmlinux (PVH entry) or a bzImage.
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// The most vCPUs a pod's VM may grow to as containers join it; 0: the host's CPUs.
    pub max_vcpus: u32,
    /// Appended to the kernel command line.
    pub kernel_params: String,
    /// How long to wait for the agent after the VM starts. Guest boot speed varies by three
    /// orders of magnitude between hosts (hardware KVM, TCG, emulated ring 0), so the
    /// default is generous and the wait ends early when the VM dies.
    pub boot_timeout_secs: u64,
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            kernel: PathBuf::from("/usr/share/ward/vmlinux"),
            initrd: PathBuf::from("/usr/share/ward/initrd.img"),
            vcpus: 1,
            memory_mib: 256,
            max_vcpus: 0,
            kernel_params: String::new(),
            boot_timeout_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// trace, debug, info, warning, error, critical; `--debug` forces debug. Unset: info
    /// into a `--log` file, warning on stderr (which people and engines read as output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

impl Config {
    /// Loads the configuration named by `--config`, else the one the environment points
    /// at, else the default file (or built-in defaults when it does not exist).
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(path) = explicit {
            if !path.exists() {
                return Err(ConfigError::Missing {
                    path: path.to_path_buf(),
                });
            }
            return Self::from_file(path);
        }
        match std::env::var_os(CONFIG_ENV) {
            Some(path) if !path.is_empty() => {
                let path = PathBuf::from(path);
                if !path.exists() {
                    return Err(ConfigError::Missing { path });
                }
                Self::from_file(&path)
            }
            _ => {
                let path = Path::new(DEFAULT_CONFIG_PATH);
                if path.exists() {
                    Self::from_file(path)
                } else {
                    Ok(Config::default())
                }
            }
        }
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        config.source = Some(path.to_path_buf());
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    fn validate(&self) -> Result<(), String> {
        if self.guest.vcpus == 0 || self.guest.vcpus > 255 {
            return Err(format!(
                "guest.vcpus = {}: must be 1 to 255",
                self.guest.vcpus
            ));
        }
        if self.guest.memory_mib < 64 {
            return Err(format!(
                "guest.memory_mib = {}: the guest needs at least 64",
                self.guest.memory_mib
            ));
        }
        if self.guest.boot_timeout_secs == 0 {
            return Err("guest.boot_timeout_secs must be positive".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn reads_every_section() {
        let config = Config::parse(
            r#"
            [hypervisor]
            backend = "qemu"
            accel = "tcg"
            [hypervisor.qemu]
            machine = "q35"
            [guest]
            kernel = "/k"
            initrd = "/i"
            vcpus = 2
            memory_mib = 512
            [log]
            level = "debug"
            "#,
        )
        .unwrap();
        assert_eq!(config.hypervisor.accel, ward_hypervisor::AccelChoice::Tcg);
        assert_eq!(config.hypervisor.qemu.machine, "q35");
        assert_eq!(config.guest.kernel, PathBuf::from("/k"));
        assert_eq!(config.guest.vcpus, 2);
        assert_eq!(config.guest.memory_mib, 512);
        assert_eq!(config.log.level.as_deref(), Some("debug"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(Config::parse("[guest]\nvcpu = 2\n")
            .unwrap_err()
            .contains("vcpu"));
        assert!(Config::parse("[hypervisor]\nbackend = \"xen\"\n").is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[guest]\nvcpus = 0\n").unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("guest.vcpus"), "{err}");
    }

    #[test]
    fn missing_file_named_by_env_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        // Only this test touches WARD_CONFIG.
        std::env::set_var(CONFIG_ENV, &path);
        let result = Config::load(None);
        std::env::remove_var(CONFIG_ENV);
        assert!(matches!(result, Err(ConfigError::Missing { .. })));
    }
}
