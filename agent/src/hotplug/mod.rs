//! The guest's half of hotplug. The VMM makes a vCPU, a disk or a NIC present (ACPI), but
//! Linux leaves hot-added CPUs offline, and will not let a hotplug slot go while a driver
//! holds its device: the agent onlines the one and releases the others, on the runtime's
//! word.
//!
//! Everything here works on a sysfs root passed in, so that the tests can run it on a
//! tree of plain files; the server passes `/sys`.

mod cpus;
mod disks;
mod nics;
mod slots;

use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use ttrpc::Code;

use crate::error::Coded;

pub use cpus::online_cpus;
pub use disks::{release_disk, wait_disk};
pub use nics::release_nic;

/// How often a wait looks at sysfs again; hotplug events take milliseconds to land.
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Error)]
pub enum HotplugError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("{path}: cannot parse {text:?}")]
    Parse { path: PathBuf, text: String },
    #[error("{want} CPUs are not online after {waited:?}: online {online:?}, present {present:?}")]
    CpusTimeout {
        want: u32,
        waited: Duration,
        online: String,
        present: String,
    },
    #[error("no disk with serial {serial:?} appeared within {waited:?} (block devices: {seen})")]
    DiskTimeout {
        serial: String,
        waited: Duration,
        seen: String,
    },
    #[error("no disk has serial {0:?}")]
    NoSuchDisk(String),
    #[error("disk {serial:?} ({device}) is mounted at {mount_point}: unmount it first")]
    DiskMounted {
        serial: String,
        device: String,
        mount_point: String,
    },
    #[error("disk {serial:?} ({device}) is not in a hotplug slot ({why}): only hot-added disks can be released")]
    NotHotplugged {
        serial: String,
        device: String,
        why: String,
    },
    #[error("disk {serial:?} ({device}) was released but is still present after {waited:?}")]
    StillPresent {
        serial: String,
        device: String,
        waited: Duration,
    },
    #[error("network card {mac} ({name}) is not in a hotplug slot ({why})")]
    NicNotHotplugged {
        mac: String,
        name: String,
        why: String,
    },
    #[error("network card {mac} ({name}) was released but is still present after {waited:?}")]
    NicStillPresent {
        mac: String,
        name: String,
        waited: Duration,
    },
    #[error("a vCPU count of {0} is out of range")]
    BadCount(u32),
    #[error("{0:?} is not a disk serial (1 to 20 of [A-Za-z0-9_.-])")]
    BadSerial(String),
}

impl Coded for HotplugError {
    fn code(&self) -> Code {
        match self {
            HotplugError::CpusTimeout { .. }
            | HotplugError::DiskTimeout { .. }
            | HotplugError::StillPresent { .. }
            | HotplugError::NicStillPresent { .. } => Code::DEADLINE_EXCEEDED,
            HotplugError::NoSuchDisk(_) => Code::NOT_FOUND,
            HotplugError::DiskMounted { .. }
            | HotplugError::NotHotplugged { .. }
            | HotplugError::NicNotHotplugged { .. } => Code::FAILED_PRECONDITION,
            HotplugError::BadCount(_) | HotplugError::BadSerial(_) => Code::INVALID_ARGUMENT,
            _ => Code::INTERNAL,
        }
    }
}

fn read(path: &Path) -> Result<String, HotplugError> {
    std::fs::read_to_string(path).map_err(|source| HotplugError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, value: &str) -> Result<(), HotplugError> {
    std::fs::write(path, value).map_err(|source| HotplugError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}
