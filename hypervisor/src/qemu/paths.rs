//! The files of one VM inside its run directory. The names are fixed, so a later `ward`
//! command can find every socket from the run directory alone.

use std::path::{Path, PathBuf};

use crate::{runfiles, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    pub dir: PathBuf,
    /// The guest's serial console.
    pub console: PathBuf,
    /// QMP control socket.
    pub qmp: PathBuf,
    /// QEMU's stdout and stderr.
    pub qemu_log: PathBuf,
    /// vhost-user socket between QEMU and vhost-device-vsock.
    pub vhost_user: PathBuf,
    /// Hybrid vsock socket the host connects to (`CONNECT <port>`).
    pub hybrid_uds: PathBuf,
    /// vhost-device-vsock's stdout and stderr.
    pub vsock_log: PathBuf,
}

impl RunPaths {
    pub fn new(dir: &Path) -> RunPaths {
        RunPaths {
            dir: dir.to_path_buf(),
            console: dir.join("console.log"),
            qmp: dir.join("qmp.sock"),
            qemu_log: dir.join("qemu.log"),
            vhost_user: dir.join("vhost-vsock.sock"),
            hybrid_uds: dir.join("vsock.sock"),
            vsock_log: dir.join("vhost-device-vsock.log"),
        }
    }

    /// The paths of a VM whose control socket is `qmp`.
    pub fn from_control_socket(qmp: &Path) -> Option<RunPaths> {
        qmp.parent().map(RunPaths::new)
    }

    pub fn sockets(&self) -> [&Path; 3] {
        [&self.qmp, &self.vhost_user, &self.hybrid_uds]
    }

    /// Unix socket paths are short: fail early with the path rather than late in QEMU.
    /// (Guest-initiated connections land on `<hybrid_uds>_<port>`: 11 bytes more.)
    pub fn check_socket_lengths(&self) -> Result<()> {
        for socket in self.sockets() {
            let suffix = if socket == self.hybrid_uds { 11 } else { 0 };
            runfiles::check_socket_path(&self.dir, socket, suffix)?;
        }
        Ok(())
    }

    /// Removes the sockets; those already gone are fine.
    pub fn remove_sockets(&self) -> Result<()> {
        self.sockets()
            .into_iter()
            .try_for_each(runfiles::remove_if_present)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_socket_paths_that_do_not_fit() {
        assert!(RunPaths::new(Path::new("/run/ward/abc"))
            .check_socket_lengths()
            .is_ok());
        let deep = format!("/run/ward/{}", "x".repeat(90));
        let err = RunPaths::new(Path::new(&deep))
            .check_socket_lengths()
            .expect_err("too long");
        assert!(err.to_string().contains("too deep"), "{err}");
    }

    #[test]
    fn finds_everything_from_the_control_socket() {
        let paths = RunPaths::new(Path::new("/run/ward/c1"));
        assert_eq!(RunPaths::from_control_socket(&paths.qmp), Some(paths));
    }
}
