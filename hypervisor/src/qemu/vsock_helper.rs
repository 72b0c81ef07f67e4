//! vhost-device-vsock: vsock for hosts without /dev/vhost-vsock, in a user process.
//!
//! QEMU is its vhost-user frontend through `paths.vhost_user`; the host reaches guest
//! ports through the hybrid socket `paths.hybrid_uds` (`CONNECT <port>\n`), and guest
//! connections to host port P arrive on `<hybrid_uds>_P`. Each VM has its own helper,
//! so every guest can have CID 3.
//!
//! The helper serves its socket again after QEMU disconnects, forever; so it runs under
//! a watcher (see `detach::supervise`) that stops it when QEMU ends.

use std::path::Path;
use std::time::Duration;

use crate::detach::{find_binary, spawn_supervised, CgroupJoin, Privileges, Program, Supervised};
use crate::{runfiles, Error, ProcessRecord, Result};

use super::paths::RunPaths;

/// The guest's CID behind this helper.
pub const GUEST_CID: u32 = 3;
/// How long the helper may take to create its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A started helper whose vhost-user socket is ready for QEMU.
#[derive(Debug)]
pub struct VsockHelper {
    pub helper: ProcessRecord,
    pub watcher: ProcessRecord,
    /// Handed the VMM's PID once it runs (dropping it stops the helper).
    pub supervised: Supervised,
}

/// Starts the helper (and its watcher) in the cgroup `cgroup` opened.
pub fn start(binary: &Path, paths: &RunPaths, cgroup: &CgroupJoin) -> Result<VsockHelper> {
    let path = find_binary(binary).ok_or_else(|| Error::MissingBinary {
        binary: binary.display().to_string(),
        hint: "install it with `cargo install vhost-device-vsock` (needed because \
               /dev/vhost-vsock is not usable on this host)"
            .to_string(),
    })?;
    // Leftovers would make its bind fail, or fool the wait below.
    paths.remove_sockets()?;
    let args = [
        "--guest-cid".as_ref(),
        GUEST_CID.to_string().as_ref(),
        "--socket".as_ref(),
        paths.vhost_user.as_os_str(),
        "--uds-path".as_ref(),
        paths.hybrid_uds.as_os_str(),
    ]
    .map(std::ffi::OsStr::to_os_string);
    let program = Program::new(
        "vhost-device-vsock",
        &path,
        &args,
        &paths.dir,
        &paths.vsock_log,
    )?
    // It only moves bytes between sockets in ward's run directory: no privilege needed.
    .privileges(Privileges::None)
    .cgroup(cgroup)?;
    let supervised = spawn_supervised(&program)?;
    let helper = ProcessRecord::of("vhost-device-vsock", supervised.helper);
    let watcher = ProcessRecord::of("vsock-watcher", supervised.watcher);
    let (Some(helper), Some(watcher)) = (helper, watcher) else {
        return Err(died(paths));
    };
    runfiles::wait_for_socket(
        "vhost-device-vsock",
        &helper,
        &paths.vhost_user,
        &paths.vsock_log,
        READY_TIMEOUT,
    )?;
    Ok(VsockHelper {
        helper,
        watcher,
        supervised,
    })
}

fn died(paths: &RunPaths) -> Error {
    runfiles::helper_died("vhost-device-vsock", "exited", &paths.vsock_log)
}
