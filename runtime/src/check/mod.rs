//! `ward check`: what this host offers ward, item by item, each pass, warn or fail with
//! what to do. Every group is a function of plain inputs (file contents, command outputs,
//! a probe report) so that tests can feed it any host; [`run`] gathers the real ones.

pub mod assets;
pub mod cpu;
pub mod host;
pub mod integrations;
pub mod kvm;
pub mod qemu;
pub mod report;
pub mod sharedfs;
pub mod vsock;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ward_hypervisor::accel;

use crate::config::Config;
pub use report::Report;

/// Where a program was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Where ward itself will find it (an absolute path as configured, or in PATH).
    InPath(PathBuf),
    /// Installed, but somewhere ward does not look (e.g. ~/.cargo/bin outside PATH).
    OutsidePath(PathBuf),
    Missing,
}

impl Lookup {
    /// Looks `binary` up as ward's backend does (a path as is, a bare name in `path_var`),
    /// then in `elsewhere`.
    pub fn find(binary: &Path, path_var: Option<OsString>, elsewhere: &[PathBuf]) -> Lookup {
        use std::os::unix::fs::PermissionsExt;
        let executable = |p: &Path| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        if binary.components().count() > 1 {
            return if executable(binary) {
                Lookup::InPath(binary.to_path_buf())
            } else {
                Lookup::Missing
            };
        }
        let path_var = path_var.unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        if let Some(found) = std::env::split_paths(&path_var)
            .map(|dir| dir.join(binary))
            .find(|p| executable(p))
        {
            return Lookup::InPath(found);
        }
        elsewhere
            .iter()
            .map(|dir| dir.join(binary))
            .find(|p| executable(p))
            .map_or(Lookup::Missing, Lookup::OutsidePath)
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Lookup::InPath(p) | Lookup::OutsidePath(p) => Some(p),
            Lookup::Missing => None,
        }
    }
}

/// The stdout of `program args`, or why there is none. stdin is closed so that nothing
/// can wait for input.
/// What an external command may take before the check gives up on it: `ward check` must
/// answer even when a tool it asks hangs.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

fn output(program: &Path, args: &[&str]) -> Result<String, String> {
    use std::io::Read;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    // Readers drain the pipes while we wait, so a long help text never blocks the child.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not answer within {} s",
                    program.display(),
                    COMMAND_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("{status} ({})", stderr.trim()));
    }
    Ok(stdout)
}

/// A file's text, or None when it cannot be read (absent, or not ours to read).
fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// The source checkout this binary was built from, if it is still there: the kernel
/// configuration can only be hashed from it.
fn source_tree() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    root.join("tools/build-guest-kernel")
        .is_file()
        .then_some(root)
}

fn current_kernel_hash() -> assets::CurrentHash {
    let root = source_tree().ok_or_else(|| {
        "cannot verify: the source tree this ward was built from is not on this host".to_string()
    })?;
    // The hash covers the source package's version, and the builder installs a missing
    // package: a diagnostic must not install anything, so ask only when it is there.
    let status = output(
        Path::new("dpkg-query"),
        &["-W", "-f=${Status}", "linux-source-6.12"],
    )
    .unwrap_or_default();
    if !status.contains("install ok installed") {
        return Err("cannot verify: linux-source-6.12 is not installed".to_string());
    }
    let hash = output(&root.join("tools/build-guest-kernel"), &["--print-hash"])?;
    let hash = hash.trim().to_string();
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hash)
    } else {
        Err(format!(
            "tools/build-guest-kernel --print-hash printed {hash:?}"
        ))
    }
}

fn config_files(paths: &[PathBuf]) -> Vec<(PathBuf, Result<String, String>)> {
    paths
        .iter()
        .filter(|p| p.exists())
        .map(|p| {
            (
                p.clone(),
                std::fs::read_to_string(p).map_err(|e| e.to_string()),
            )
        })
        .collect()
}

fn engine(binary: &str, configs: &[PathBuf]) -> integrations::Engine {
    let path_var = std::env::var_os("PATH");
    // Engines are system services: look where they are installed, not only in our PATH.
    let system = ["/usr/local/bin", "/usr/bin", "/usr/sbin", "/usr/local/sbin"].map(PathBuf::from);
    integrations::Engine {
        installed: Lookup::find(Path::new(binary), path_var, &system) != Lookup::Missing,
        configs: config_files(configs),
    }
}

/// Runs every check on this host. Measures KVM now (the probe's cache is refreshed).
pub fn run(config: &Config) -> Report {
    let hv = &config.hypervisor;
    let path_var = std::env::var_os("PATH");
    let cargo_bin: Vec<PathBuf> = home().map(|h| h.join(".cargo/bin")).into_iter().collect();
    let mut items = Vec::new();

    items.extend(cpu::check(&read("/proc/cpuinfo").unwrap_or_default()));

    let probe = accel::probe_report(&hv.cache_dir, true);
    let resolved = accel::resolve(hv.accel, &hv.cache_dir).map_err(|e| e.to_string());
    let decision = kvm::check(&probe, hv.accel, resolved);
    items.extend(decision.items);

    let helper = Lookup::find(&hv.qemu.vsock_helper, path_var.clone(), &cargo_bin);
    let helper_version = helper.path().map(|p| output(p, &["--version"]));
    items.extend(vsock::check(&vsock::Inputs {
        device: ward_hypervisor::qemu::vhost_vsock::available()
            .then_some(())
            .ok_or_else(|| match std::fs::metadata("/dev/vhost-vsock") {
                Ok(_) => "cannot open it".to_string(),
                Err(e) => e.to_string(),
            }),
        helper_name: hv.qemu.vsock_helper.display().to_string(),
        helper,
        helper_version,
    }));

    let qemu_lookup = Lookup::find(&hv.qemu.binary, path_var.clone(), &[]);
    let qemu_out = |args: &[&str]| match qemu_lookup.path() {
        Some(p) => output(p, args),
        None => Err("QEMU is not installed".to_string()),
    };
    let device_help = qemu_out(&["-device", "help"]);
    let virtiofsd_dirs = ["/usr/libexec", "/usr/lib/qemu"].map(PathBuf::from);
    let virtiofsd = Lookup::find(Path::new("virtiofsd"), path_var.clone(), &virtiofsd_dirs);
    items.extend(sharedfs::check(&device_help, &hv.qemu.machine, &virtiofsd));
    items.extend(qemu::check(&qemu::Inputs {
        binary: hv.qemu.binary.clone(),
        lookup: qemu_lookup.clone(),
        version: qemu_out(&["--version"]),
        machine_help: qemu_out(&["-machine", "help"]),
        accel_help: qemu_out(&["-accel", "help"]),
        machine: hv.qemu.machine.clone(),
        accel: decision.accelerator,
    }));

    items.extend(assets::check(
        &config.guest.kernel,
        &config.guest.initrd,
        &current_kernel_hash(),
        &assets::Expected {
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: ward_agent_protocol::PROTOCOL_VERSION,
        },
    ));

    items.extend(host::check(
        &read("/proc/self/mounts").unwrap_or_default(),
        read("/proc/sys/user/max_user_namespaces").as_deref(),
        read("/proc/sys/kernel/unprivileged_userns_clone").as_deref(),
        &read("/proc/meminfo").unwrap_or_default(),
        config.guest.memory_mib,
    ));

    let mut podman_configs = vec![
        PathBuf::from("/usr/share/containers/containers.conf"),
        PathBuf::from("/etc/containers/containers.conf"),
    ];
    podman_configs.extend(home().map(|h| h.join(".config/containers/containers.conf")));
    let mut crio_configs = vec![PathBuf::from("/etc/crio/crio.conf")];
    if let Ok(dir) = std::fs::read_dir("/etc/crio/crio.conf.d") {
        let mut dropins: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        dropins.sort();
        crio_configs.extend(dropins);
    }
    let ward = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/bin/ward"));
    items.extend(integrations::check(
        &engine(
            "containerd",
            &[PathBuf::from("/etc/containerd/config.toml")],
        ),
        &engine("podman", &podman_configs),
        &engine("crio", &crio_configs),
        &ward,
    ));

    let backend = match ward_hypervisor::choose_backend(hv) {
        Ok(kind) => kind.to_string(),
        Err(e) => format!("none ({e})"),
    };
    Report::new(
        items,
        backend,
        decision.accelerator.map(|a| a.to_string()),
        probe.class.to_string(),
        config.source.as_ref().map(|p| p.display().to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_distinguishes_path_from_elsewhere() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let cargo = dir.path().join("cargo");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&cargo).unwrap();
        let helper = cargo.join("helper");
        std::fs::write(&helper, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let name = Path::new("helper");
        let path = Some(bin.clone().into_os_string());
        assert_eq!(
            Lookup::find(name, path.clone(), std::slice::from_ref(&cargo)),
            Lookup::OutsidePath(helper.clone())
        );
        assert_eq!(Lookup::find(name, path, &[]), Lookup::Missing);
        assert_eq!(
            Lookup::find(name, Some(cargo.into_os_string()), &[]),
            Lookup::InPath(helper.clone())
        );
        assert_eq!(Lookup::find(&helper, None, &[]), Lookup::InPath(helper));
    }
}
