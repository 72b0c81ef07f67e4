//! The qemu-system-x86_64 command line for a VM: a pure function of what was decided.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::accel::Accel;
use crate::{Error, Result, VmConfig};

use super::paths::RunPaths;

/// What every guest gets on its kernel command line. `reboot=t` with `-no-reboot` and
/// `panic=-1` turn both a guest reboot and a guest panic into QEMU exiting.
pub const BASE_KERNEL_PARAMS: &str = "console=ttyS0 reboot=t panic=-1 quiet";

/// `-sandbox`: QEMU's seccomp filter with every optional deny set (QEMU 7.2 accepts all).
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
/// TCG's translation cache, MiB. QEMU 7.2 reserves 1 GiB by default and fills it as the
/// guest runs new code; bounded here so that what QEMU uses beyond the guest's RAM stays
/// within the overhead the sandbox's host cgroup allows for it (OVERHEAD_MIB in
/// runtime/src/sandbox/host_cgroup.rs, 512 MiB). ward's guests translate a few tens of
/// MiB; a full cache is flushed and refilled, which costs time, not correctness.
pub const TCG_TB_SIZE_MIB: u32 = 256;

/// Memory slots (pc-dimm) of a VM that may grow: each hot-add takes one.
pub const MEMORY_SLOTS: u32 = 8;
/// The IDs of the PCIe root ports that hot-added disks plug into: `hp0`, `hp1`...
pub const DISK_PORT_PREFIX: &str = "hp";

/// The longest mount tag virtio-9p accepts.
const MAX_TAG_LEN: usize = 31;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// Minimal x86 machine, virtio-mmio devices, no PCI, no firmware to speak of.
    Microvm,
    /// PCIe machine with SeaBIOS; virtio-pci devices.
    Q35,
}

impl Machine {
    pub fn parse(name: &str) -> Result<Machine> {
        match name {
            "microvm" => Ok(Machine::Microvm),
            "q35" => Ok(Machine::Q35),
            other => Err(Error::Config(format!(
                "unsupported QEMU machine type {other:?}: use \"microvm\" or \"q35\""
            ))),
        }
    }

    /// The virtio transport suffix of device names: `virtio-9p-device` vs `-pci`.
    fn transport(self) -> &'static str {
        match self {
            Machine::Microvm => "device",
            Machine::Q35 => "pci",
        }
    }

    /// The -machine value; its memory comes from the shared backend (vhost-user needs it).
    fn spec(self) -> &'static str {
        match self {
            // No ACPI: with microvm's ACPI tables the guest kernel cannot get the serial
            // port's IRQ, so every userspace write to the console fails with EIO; without
            // them it reads the MP table, and QEMU lists the virtio-mmio devices on the
            // kernel command line. The PIT and PIC stay: without them the guest cannot
            // verify its local APIC timer and never brings up a second vCPU. The RTC
            // stays too: without kvmclock (TCG) it is the guest's only wall clock.
            Machine::Microvm => {
                "microvm,acpi=off,x-option-roms=off,isa-serial=on,memory-backend=mem"
            }
            // Nothing the guest does not use: no SATA, SMBus, PS/2 or VMware port.
            Machine::Q35 => "q35,sata=off,smbus=off,i8042=off,vmport=off,memory-backend=mem",
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Machine::Microvm => "microvm",
            Machine::Q35 => "q35",
        })
    }
}

/// How the guest's vsock device is backed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VsockDevice {
    /// In-kernel vhost-vsock; `vhostfd` is an already opened /dev/vhost-vsock whose CID
    /// ward reserved (see `vhost_vsock`), passed to QEMU as that descriptor number.
    Kernel { cid: u32, vhostfd: Option<RawFd> },
    /// vhost-device-vsock over a vhost-user socket; the CID is the helper's setting.
    VhostUser { socket: std::path::PathBuf },
}

/// Everything the command line depends on.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub vm: &'a VmConfig,
    pub machine: Machine,
    pub accel: Accel,
    pub vsock: &'a VsockDevice,
    pub paths: &'a RunPaths,
    /// The host TSC frequency; a microvm guest under TCG cannot calibrate its own.
    pub tsc_khz: Option<u32>,
    /// The descriptor (passed to QEMU) of the pipe to the console keeper, which caps the
    /// console log (see `detach::console`); without one QEMU writes the log itself.
    pub console_fd: Option<RawFd>,
    /// The descriptors (passed to QEMU) of `vm.nics`' taps, in order.
    pub nic_fds: &'a [RawFd],
}

/// The QEMU fd set that holds the console pipe.
const CONSOLE_FDSET: u32 = 1;

/// The guest kernel's command line.
pub fn kernel_params(inputs: &Inputs) -> String {
    let mut params = BASE_KERNEL_PARAMS.to_string();
    if inputs.machine == Machine::Microvm {
        if let Some(khz) = inputs.tsc_khz {
            params.push_str(&format!(" tsc_early_khz={khz}"));
        }
    }
    if inputs.vm.hotplug.is_some() && inputs.machine == Machine::Q35 {
        // Hot-added DIMMs go to the movable zone, where the kernel keeps nothing it
        // cannot migrate: so a DIMM can be emptied and unplugged again when the
        // container that brought it is deleted.
        params.push_str(" memhp_default_state=online_movable");
    }
    let extra = inputs.vm.extra_kernel_params.trim();
    if !extra.is_empty() {
        params.push(' ');
        params.push_str(extra);
    }
    params
}

/// Checks what QEMU would reject less clearly.
pub fn validate(vm: &VmConfig) -> Result<()> {
    if vm.vcpus == 0 || vm.memory_mib < 16 {
        return Err(Error::Config(format!(
            "a VM needs at least 1 vCPU and 16 MiB (asked: {} vCPUs, {} MiB)",
            vm.vcpus, vm.memory_mib
        )));
    }
    for dir in &vm.shared_dirs {
        if dir.tag.is_empty() || dir.tag.len() > MAX_TAG_LEN {
            return Err(Error::Config(format!(
                "shared directory tag {:?} must be 1 to {MAX_TAG_LEN} bytes",
                dir.tag
            )));
        }
    }
    Ok(())
}

/// Whether a growing VM gets all its vCPUs at boot (see `HotplugRoom::cpus_preallocated`):
/// under TCG, where the guest sees no hypervisor and ignores hot-pluggable CPU slots.
pub fn preallocated_cpus(inputs: &Inputs) -> bool {
    inputs.vm.hotplug.is_some() && inputs.machine == Machine::Q35 && inputs.accel == Accel::Tcg
}

/// The arguments after the program name.
pub fn qemu_args(inputs: &Inputs) -> Vec<OsString> {
    let vm = inputs.vm;
    let transport = inputs.machine.transport();
    let mut args = Args::default();
    args.plain(&["-name"]);
    args.opt(&[("guest=", OsStr::new(&vm.id))]);
    args.plain(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    // QEMU's own seccomp filter, installed before the guest runs (issue 14): besides the
    // base list, it refuses obsolete calls, any change of uid/gid or capabilities, fork
    // and exec, and scheduler/affinity changes. ward opens whatever QEMU needs beforehand
    // or passes it over the QMP socket, so QEMU never has to start a helper itself.
    args.plain(&["-sandbox", SANDBOX]);

    let tcg = format!("tcg,tb-size={TCG_TB_SIZE_MIB}");
    let accel = match (inputs.accel, vm.vcpus) {
        (Accel::Kvm, _) => "kvm".to_string(),
        (Accel::Tcg, 1) => tcg,
        // One host thread per vCPU; without it TCG runs all vCPUs round-robin on one.
        (Accel::Tcg, _) => format!("{tcg},thread=multi"),
    };
    args.plain(&["-accel", &accel]);
    args.plain(&[
        "-cpu",
        match inputs.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        },
    ]);
    // Hotplug room is declared at boot: the CPU and memory slots the firmware tables
    // describe, and one PCIe root port per disk (q35's root bus takes no hotplug).
    let room = vm.hotplug.filter(|_| inputs.machine == Machine::Q35);
    let (smp, memory) = match room {
        Some(room) => (
            if preallocated_cpus(inputs) {
                room.max_vcpus.max(vm.vcpus).to_string()
            } else {
                format!("{},maxcpus={}", vm.vcpus, room.max_vcpus.max(vm.vcpus))
            },
            format!(
                "{}M,slots={MEMORY_SLOTS},maxmem={}M",
                vm.memory_mib,
                room.max_memory_mib.max(vm.memory_mib)
            ),
        ),
        None => (vm.vcpus.to_string(), format!("{}M", vm.memory_mib)),
    };
    args.plain(&["-smp", &smp, "-m", &memory]);
    args.plain(&[
        "-object",
        &format!(
            "memory-backend-memfd,id=mem,size={}M,share=on",
            vm.memory_mib
        ),
    ]);
    args.plain(&["-machine", inputs.machine.spec()]);

    args.plain(&["-kernel"]);
    args.path(&vm.kernel);
    args.plain(&["-initrd"]);
    args.path(&vm.initrd);
    args.plain(&["-append", &kernel_params(inputs)]);

    // The console goes to a file from the first byte; the runtime shows its tail when
    // the guest dies. Through the keeper's pipe when there is one: QEMU has no size limit.
    match inputs.console_fd {
        Some(fd) => {
            args.plain(&["-add-fd", &format!("fd={fd},set={CONSOLE_FDSET}")]);
            // append=on: without it QEMU truncates what it opens, and a pipe cannot be
            // truncated (EINVAL).
            args.plain(&[
                "-chardev",
                &format!("file,id=console,path=/dev/fdset/{CONSOLE_FDSET},append=on"),
            ]);
        }
        None => {
            args.plain(&["-chardev"]);
            args.opt(&[("file,id=console,path=", inputs.paths.console.as_os_str())]);
        }
    }
    args.plain(&["-serial", "chardev:console"]);
    args.plain(&["-chardev"]);
    args.opt(&[
        ("socket,id=qmp,path=", inputs.paths.qmp.as_os_str()),
        (",server=on,wait=off", OsStr::new("")),
    ]);
    args.plain(&["-mon", "chardev=qmp,mode=control"]);

    for (n, dir) in vm.shared_dirs.iter().enumerate() {
        args.plain(&["-fsdev"]);
        let readonly = if dir.read_only { ",readonly=on" } else { "" };
        args.opt(&[
            (&format!("local,id=fs{n},path="), dir.host_path.as_os_str()),
            (
                &format!(",security_model=passthrough,multidevs=remap{readonly}"),
                OsStr::new(""),
            ),
        ]);
        args.plain(&["-device"]);
        args.opt(&[(
            &format!("virtio-9p-{transport},fsdev=fs{n},mount_tag="),
            OsStr::new(&dir.tag),
        )]);
    }

    for n in 0..room.map_or(0, |r| r.disk_slots) {
        args.plain(&[
            "-device",
            &format!("pcie-root-port,id={DISK_PORT_PREFIX}{n},chassis={}", n + 1),
        ]);
    }

    // Taps the runtime opened in the pod's network namespace; QEMU only reads and writes
    // them (no vhost-net: there is no /dev/vhost-net to open for it, and no helper may run).
    for (n, (nic, fd)) in vm.nics.iter().zip(inputs.nic_fds).enumerate() {
        args.plain(&["-netdev", &format!("tap,id=net{n},fd={fd},vhost=off")]);
        args.plain(&[
            "-device",
            &format!(
                "virtio-net-{transport},netdev=net{n},mac={},host_mtu={}",
                nic.mac_text(),
                nic.mtu
            ),
        ]);
    }

    match inputs.vsock {
        VsockDevice::Kernel { cid, vhostfd } => {
            let fd = vhostfd
                .map(|fd| format!(",vhostfd={fd}"))
                .unwrap_or_default();
            args.plain(&[
                "-device",
                &format!("vhost-vsock-{transport},guest-cid={cid}{fd}"),
            ]);
        }
        VsockDevice::VhostUser { socket } => {
            args.plain(&["-chardev"]);
            args.opt(&[("socket,id=vsock,path=", socket.as_os_str())]);
            args.plain(&[
                "-device",
                &format!("vhost-user-vsock-{transport},chardev=vsock"),
            ]);
        }
    }
    args.0
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn plain(&mut self, items: &[&str]) {
        self.0.extend(items.iter().map(OsString::from));
    }

    /// A file name argument (-kernel, -initrd), taken literally by QEMU.
    fn path(&mut self, path: &Path) {
        self.0.push(path.as_os_str().to_os_string());
    }

    /// One option-string argument built from (literal, value) pairs; values may contain
    /// anything, so their commas are doubled (QEMU's escape in option strings).
    fn opt(&mut self, parts: &[(&str, &OsStr)]) {
        let mut arg = Vec::new();
        for (literal, value) in parts {
            arg.extend_from_slice(literal.as_bytes());
            for &byte in value.as_bytes() {
                arg.push(byte);
                if byte == b',' {
                    arg.push(b',');
                }
            }
        }
        self.0.push(OsString::from_vec(arg));
    }
}

#[cfg(test)]
mod tests;
