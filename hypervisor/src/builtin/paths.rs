//! The files of one builtin-backend VM inside its run directory.

use std::path::{Path, PathBuf};

use crate::{runfiles, Result};

#[derive(Debug, Clone)]
pub struct RunPaths {
    pub dir: PathBuf,
    /// ward-vmm's control socket (JSON lines).
    pub api: PathBuf,
    /// Hybrid vsock: `CONNECT <port>\n`; guest connections to the host arrive at
    /// `<vsock>_<port>`.
    pub vsock: PathBuf,
    pub console: PathBuf,
    /// ward-vmm's own log (its stderr).
    pub vmm_log: PathBuf,
}

impl RunPaths {
    pub fn new(dir: &Path) -> RunPaths {
        RunPaths {
            dir: dir.to_path_buf(),
            api: dir.join("vmm.sock"),
            vsock: dir.join("vsock.sock"),
            console: dir.join("console.log"),
            vmm_log: dir.join("vmm.log"),
        }
    }

    /// The run directory of a VM, from its recorded control socket.
    pub fn from_control_socket(api: &Path) -> Option<RunPaths> {
        api.parent().map(RunPaths::new)
    }

    /// virtiofsd's vhost-user socket for shared directory `n`.
    pub fn fs_socket(&self, n: usize) -> PathBuf {
        self.dir.join(format!("fs{n}.sock"))
    }

    pub fn fs_log(&self, n: usize) -> PathBuf {
        self.dir.join(format!("virtiofsd{n}.log"))
    }

    /// Every socket path must fit sockaddr_un; vsock's `<vsock>_<port>` adds up to 11.
    pub fn check_socket_lengths(&self, shared_dirs: usize) -> Result<()> {
        runfiles::check_socket_path(&self.dir, &self.api, 0)?;
        runfiles::check_socket_path(&self.dir, &self.vsock, 11)?;
        (0..shared_dirs)
            .try_for_each(|n| runfiles::check_socket_path(&self.dir, &self.fs_socket(n), 0))
    }

    /// Removes the sockets a previous VM in this directory may have left.
    pub fn remove_sockets(&self, shared_dirs: usize) -> Result<()> {
        runfiles::remove_if_present(&self.api)?;
        runfiles::remove_if_present(&self.vsock)?;
        (0..shared_dirs).try_for_each(|n| runfiles::remove_if_present(&self.fs_socket(n)))
    }
}
