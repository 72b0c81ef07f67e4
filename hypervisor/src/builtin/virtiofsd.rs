//! virtiofsd: one per shared directory, serving it over vhost-user to ward-vmm's
//! virtio-fs device. It ends by itself when the VMM disconnects; a launch that fails
//! before that stops it by its record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::detach::{find_binary, spawn_detached, CgroupJoin, Privileges, Program};
use crate::{runfiles, Error, ProcessRecord, Result, SharedDir};

use super::paths::RunPaths;

/// How long virtiofsd may take to create its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The capabilities virtiofsd's serving process gives up from its default set (issue 14).
/// MKNOD: the guest cannot create device nodes in a host directory. SETFCAP: it cannot
/// give a host file capabilities. SETUID and SETGID stay: virtiofsd switches its thread's
/// effective uid and gid to the guest caller's to create a file as that caller, and
/// without them every create by a non-root container user fails with EPERM. (Dropping
/// SETUID would not stop setuid binaries either: chmod by the file's owner needs no
/// capability; see issue 14's share item for that.)
pub const MODCAPS: &str = "--modcaps=-mknod:-setfcap";

/// virtiofsd's arguments for one directory.
pub fn args(dir: &SharedDir, socket: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "--socket-path".into(),
        socket.into(),
        "--shared-dir".into(),
        dir.host_path.clone().into(),
        // Host files change under the guest (bind sources, the engine's writes): never
        // let the guest cache stale data or metadata.
        "--cache".into(),
        "never".into(),
        // Bind mounts below the shared directory get their own inode numbers space.
        "--announce-submounts".into(),
        // Its defaults, said out loud since ward relies on them: the serving process runs
        // in new mount, PID and network namespaces with the shared directory as its root,
        // under virtiofsd's seccomp filter (a forbidden call kills it).
        "--sandbox".into(),
        "namespace".into(),
        "--seccomp".into(),
        "kill".into(),
        MODCAPS.into(),
    ];
    if dir.read_only {
        args.push("--readonly".into());
    }
    args
}

/// Starts virtiofsd for every shared directory, in the cgroup `cgroup` opened, and waits
/// for their sockets.
pub fn start_all(
    binary: &Path,
    dirs: &[SharedDir],
    paths: &RunPaths,
    cgroup: &CgroupJoin,
) -> Result<(Vec<ProcessRecord>, Vec<PathBuf>)> {
    if dirs.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let path = find_binary(binary).ok_or_else(|| Error::MissingBinary {
        binary: binary.display().to_string(),
        hint: "install it with `cargo install virtiofsd` (the builtin backend shares \
               directories with virtio-fs)"
            .to_string(),
    })?;
    let mut records = Vec::new();
    let mut sockets = Vec::new();
    for (n, dir) in dirs.iter().enumerate() {
        let socket = paths.fs_socket(n);
        let log = paths.fs_log(n);
        let started = (|| {
            // virtiofsd needs root's capabilities to build its sandbox and then keeps
            // only its list (see MODCAPS); no_new_privs on top.
            let program = Program::new("virtiofsd", &path, &args(dir, &socket), &paths.dir, &log)?
                .privileges(Privileges::NoNewPrivs)
                .cgroup(cgroup)?;
            let pid = spawn_detached(&program)?;
            let record = ProcessRecord::of("virtiofsd", pid)
                .ok_or_else(|| runfiles::helper_died("virtiofsd", "exited at once", &log))?;
            runfiles::wait_for_socket("virtiofsd", &record, &socket, &log, READY_TIMEOUT)
                .inspect_err(|_| stop(std::slice::from_ref(&record)))?;
            Ok(record)
        })();
        match started {
            Ok(record) => {
                records.push(record);
                sockets.push(socket);
            }
            Err(e) => {
                stop(&records);
                return Err(e);
            }
        }
    }
    Ok((records, sockets))
}

/// Stops helpers of a launch that failed.
pub fn stop(records: &[ProcessRecord]) {
    for record in records {
        record.terminate(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_shares_are_read_only_in_virtiofsd() {
        let dir = SharedDir {
            tag: "t".into(),
            host_path: "/srv".into(),
            read_only: true,
        };
        let args: Vec<String> = args(&dir, Path::new("/s.sock"))
            .iter()
            .map(|a| a.to_string_lossy().into())
            .collect();
        assert_eq!(
            args[..4],
            ["--socket-path", "/s.sock", "--shared-dir", "/srv"]
        );
        assert!(args.contains(&"--readonly".to_string()));
        let joined = args.join(" ");
        assert!(
            joined.contains("--sandbox namespace --seccomp kill"),
            "{joined}"
        );
        assert!(args.contains(&"--modcaps=-mknod:-setfcap".to_string()));
    }
}
