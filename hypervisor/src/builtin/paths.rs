//! The files of one builtin-backend VM inside its run directory.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// sockaddr_un's sun_path holds 108 bytes, NUL included.
const MAX_SOCKET_PATH: usize = 107;

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
        let mut sockets = vec![(self.api.clone(), 0), (self.vsock.clone(), 11)];
        sockets.extend((0..shared_dirs).map(|n| (self.fs_socket(n), 0)));
        for (path, suffix) in sockets {
            let len = path.as_os_str().len() + suffix;
            if len > MAX_SOCKET_PATH {
                return Err(Error::Config(format!(
                    "socket path {} is {len} bytes with its suffix, over the {MAX_SOCKET_PATH} a \
                     Unix socket allows: use a shorter --root",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// Removes the sockets a previous VM in this directory may have left.
    pub fn remove_sockets(&self, shared_dirs: usize) -> Result<()> {
        let mut sockets = vec![self.api.clone(), self.vsock.clone()];
        sockets.extend((0..shared_dirs).map(|n| self.fs_socket(n)));
        for path in sockets {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
            }
        }
        Ok(())
    }
}
