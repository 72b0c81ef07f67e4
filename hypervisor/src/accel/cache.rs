//! Host facts (the probe report, the TSC frequency) cached on disk, valid for one boot of
//! one host kernel.

use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What a cached report is valid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKey {
    /// /proc/sys/kernel/random/boot_id: new at every boot.
    pub boot_id: String,
    /// `uname -r`.
    pub kernel_release: String,
}

impl HostKey {
    pub fn current() -> Result<HostKey> {
        Ok(HostKey {
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id")?,
            kernel_release: read_trimmed("/proc/sys/kernel/osrelease")?,
        })
    }
}

fn read_trimmed(path: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::io(format!("reading {path}"), e))
}

#[derive(Serialize, Deserialize)]
struct CacheFile<T> {
    key: HostKey,
    report: T,
}

/// The cached value if `file` holds one for `key`.
pub fn load<T: DeserializeOwned>(file: &Path, key: &HostKey) -> Option<T> {
    let text = std::fs::read(file).ok()?;
    let cached: CacheFile<T> = serde_json::from_slice(&text).ok()?;
    (cached.key == *key).then_some(cached.report)
}

/// Writes the value for `key`, atomically: concurrent `ward` commands may probe and
/// store at the same time, and a reader must never see half a file.
pub fn store<T: Serialize>(file: &Path, key: &HostKey, report: &T) -> Result<()> {
    let dir = file
        .parent()
        .ok_or_else(|| Error::Config(format!("{} has no directory", file.display())))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let json = serde_json::to_vec_pretty(&CacheFile {
        key: key.clone(),
        report,
    })
    .map_err(|e| Error::Config(format!("serializing {}: {e}", file.display())))?;
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| f.write_all(&json));
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, file)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("writing {}", file.display()), e));
    }
    Ok(())
}
