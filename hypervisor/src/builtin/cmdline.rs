//! ward-vmm's command line for one VM.

use std::ffi::OsString;

use crate::VmConfig;

use super::paths::RunPaths;

/// The guest's vsock CID: each VM has its own vsock device, so every guest can be 3.
pub const GUEST_CID: u32 = 3;
/// Appended after ward-vmm's own kernel parameters (`console=ttyS0 reboot=k panic=1`).
pub const KERNEL_PARAMS: &str = "quiet";
/// The most vCPUs a sandbox may be grown to by hotplug, when the VM starts with fewer.
pub const MAX_VCPUS: u32 = 8;

/// The arguments of `ward-vmm` for `vm`; `fs_sockets` are virtiofsd's sockets, one per
/// shared directory, in order.
pub fn vmm_args(
    vm: &VmConfig,
    paths: &RunPaths,
    fs_sockets: &[std::path::PathBuf],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |flag: &str, value: OsString| {
        args.push(flag.into());
        args.push(value);
    };
    push("--api-socket", paths.api.clone().into());
    push("--kernel", vm.kernel.clone().into());
    push("--initrd", vm.initrd.clone().into());
    let mut params = KERNEL_PARAMS.to_string();
    if !vm.extra_kernel_params.trim().is_empty() {
        params.push(' ');
        params.push_str(vm.extra_kernel_params.trim());
    }
    push("--cmdline", params.into());
    push("--vcpus", vm.vcpus.to_string().into());
    push("--max-vcpus", vm.vcpus.max(MAX_VCPUS).to_string().into());
    push("--memory-mib", vm.memory_mib.to_string().into());
    push("--serial-log", paths.console.clone().into());
    push("--vsock-cid", GUEST_CID.to_string().into());
    push("--vsock-uds", paths.vsock.clone().into());
    for (dir, socket) in vm.shared_dirs.iter().zip(fs_sockets) {
        let mut spec = OsString::from(format!("tag={},socket=", dir.tag));
        spec.push(socket);
        push("--fs", spec);
    }
    for (n, nic) in vm.nics.iter().enumerate() {
        push(
            "--net",
            format!("fd={},mac={},mtu={}", nic_fd(n), nic.mac_text(), nic.mtu).into(),
        );
    }
    args.push("--rng".into());
    args
}

/// The descriptor ward-vmm finds the `n`th NIC's tap at: the first ones passed.
pub fn nic_fd(n: usize) -> i32 {
    3 + n as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SharedDir;
    use std::path::{Path, PathBuf};

    #[test]
    fn describes_the_vm() {
        let vm = VmConfig {
            id: "c1".into(),
            run_dir: "/run/ward/c1/vm".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            extra_kernel_params: "ward.debug".into(),
            vcpus: 2,
            memory_mib: 512,
            shared_dirs: vec![SharedDir {
                tag: "ward-rootfs".into(),
                host_path: "/b/rootfs".into(),
                read_only: false,
            }],
            hotplug: None,
            host_cgroups: Vec::new(),
            nics: Vec::new(),
        };
        let paths = RunPaths::new(Path::new("/run/ward/c1/vm"));
        let args = vmm_args(&vm, &paths, &[PathBuf::from("/run/ward/c1/vm/fs0.sock")]);
        let text: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
        let joined = text.join(" ");
        assert!(joined.contains("--cmdline quiet ward.debug"), "{joined}");
        assert!(
            joined.contains("--vcpus 2 --max-vcpus 8 --memory-mib 512"),
            "{joined}"
        );
        assert!(joined.contains("--vsock-cid 3 --vsock-uds /run/ward/c1/vm/vsock.sock"));
        assert!(joined.contains("--fs tag=ward-rootfs,socket=/run/ward/c1/vm/fs0.sock"));
        assert!(joined.contains("--api-socket /run/ward/c1/vm/vmm.sock"));
    }
}
