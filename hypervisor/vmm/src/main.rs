//! ward-vmm: runs one microVM until the guest powers off or reboots (exit 0), or until
//! something fails (exit 1, the reason on stderr).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use slog::error;

use ward_vmm::config::{DeviceConfig, DiskConfig, FsConfig, NetConfig, VsockConfig};
use ward_vmm::vmm::{Payload, Vmm, VmmConfig};
use ward_vmm::vstate::vcpu::ExitReason;

#[derive(Debug, Parser)]
#[command(name = "ward-vmm", about = "Runs one ward sandbox microVM on KVM")]
struct Cli {
    /// The control socket (one JSON request per line); created before the guest starts.
    #[arg(long)]
    api_socket: PathBuf,
    /// Guest kernel: ELF vmlinux (PVH entry) or bzImage.
    #[arg(long)]
    kernel: PathBuf,
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Appended to ward-vmm's own kernel parameters (`console=ttyS0 reboot=k panic=1`).
    #[arg(long, default_value = "")]
    cmdline: String,
    #[arg(long)]
    vcpus: u32,
    /// vCPUs the guest may grow to with `set_vcpus` (default: --vcpus).
    #[arg(long)]
    max_vcpus: Option<u32>,
    #[arg(long)]
    memory_mib: u32,
    /// The guest's serial console is appended to this file.
    #[arg(long)]
    serial_log: PathBuf,
    /// Guest context ID of the virtio-vsock device (needs --vsock-uds).
    #[arg(long, requires = "vsock_uds")]
    vsock_cid: Option<u32>,
    /// Hybrid vsock socket: connect, write `CONNECT <port>\n`, read `OK <port>\n`.
    #[arg(long, requires = "vsock_cid")]
    vsock_uds: Option<PathBuf>,
    /// A virtio-blk drive: path=P,id=ID[,readonly]. Repeatable.
    #[arg(long, value_parser = parse_disk)]
    disk: Vec<DiskConfig>,
    /// A virtio-net device on an inherited tap: fd=N,mac=aa:bb:cc:dd:ee:ff[,mtu=M]. The fd
    /// is /dev/net/tun opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR. Repeatable (4 at most).
    #[arg(long, value_parser = parse_net)]
    net: Vec<NetConfig>,
    /// A virtio-rng device fed from the host's getrandom.
    #[arg(long)]
    rng: bool,
    /// A vhost-user virtio-fs share: tag=TAG,socket=PATH (virtiofsd's socket). Repeatable.
    #[arg(long, value_parser = parse_fs)]
    fs: Vec<FsConfig>,
    /// No ACPI tables: the guest gets `acpi=off` and the virtio devices on its command
    /// line; one vCPU, no hotplug, no graceful shutdown. For debugging.
    #[arg(long)]
    no_acpi: bool,
    /// The host's KVM emulates guest ring 0 (PVM-style hosts): keep the guest kernel off
    /// instructions KVM's emulator lacks (adds `noxsave clearcpuid=...`).
    #[arg(long)]
    emulated_ring0: bool,
    /// Runs without the per-thread seccomp filters (for debugging a trap; never by ward).
    #[arg(long)]
    no_seccomp: bool,
    /// Log level on stderr: error, warning, info, debug.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn parse_fs(s: &str) -> Result<FsConfig, String> {
    FsConfig::parse(s).map_err(|e| e.to_string())
}

fn parse_net(s: &str) -> Result<NetConfig, String> {
    NetConfig::parse(s).map_err(|e| e.to_string())
}

fn parse_disk(s: &str) -> Result<DiskConfig, String> {
    DiskConfig::parse(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log =
        ward_vmm::logging::logger(ward_vmm::logging::level(&cli.log_level), std::io::stderr());
    if cli.no_seccomp {
        slog::warn!(log, "seccomp filters are off (--no-seccomp)");
    } else if let Err(e) = ward_vmm::seccomp::enable() {
        // Fail closed: a VMM that cannot confine itself does not run a guest.
        error!(log, "cannot set up the seccomp filters"; "error" => %e);
        eprintln!("ward-vmm: {e}");
        return ExitCode::FAILURE;
    }
    let vsock = match (cli.vsock_cid, cli.vsock_uds) {
        (Some(cid), Some(uds)) => Some(VsockConfig { cid, uds }),
        _ => None,
    };
    let config = VmmConfig {
        payload: Payload::Linux {
            kernel: cli.kernel,
            initrd: cli.initrd,
            cmdline: cli.cmdline,
        },
        vcpus: cli.vcpus,
        max_vcpus: cli.max_vcpus.unwrap_or(cli.vcpus),
        memory_mib: cli.memory_mib,
        serial_log: cli.serial_log,
        api_socket: Some(cli.api_socket),
        devices: DeviceConfig {
            rng: cli.rng,
            vsock,
            disks: cli.disk,
            fs: cli.fs,
            nets: cli.net,
        },
        acpi: !cli.no_acpi,
        emulated_ring0: cli.emulated_ring0,
    };
    let result = Vmm::new(config, log.clone()).and_then(|vmm| vmm.run());
    match result {
        Ok(ExitReason::PowerOff) | Ok(ExitReason::Reboot(_)) => ExitCode::SUCCESS,
        Ok(ExitReason::Error(msg)) => {
            error!(log, "the VM failed"; "error" => &msg);
            eprintln!("ward-vmm: {msg}");
            ExitCode::FAILURE
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            error!(log, "ward-vmm failed"; "error" => &msg);
            eprintln!("ward-vmm: {msg}");
            ExitCode::FAILURE
        }
    }
}
