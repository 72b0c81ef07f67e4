//! Starting a VM: check the inputs, decide accelerator and vsock, start the helpers and
//! QEMU, and return once QEMU answers on QMP (the guest may still be booting).

use std::time::{Duration, Instant};

use crate::detach::{
    find_binary, spawn_console_keeper, spawn_detached, CgroupJoin, Program, CONSOLE_LOG_LIMIT,
};
use crate::jail::{cap, Privileges};
use crate::runfiles;
use crate::{
    BackendKind, Error, Hypervisor, ProcessRecord, Result, VmConfig, VmInstance, VsockEndpoint,
};

use super::cmdline::{self, Inputs, Machine, VsockDevice};
use super::paths::RunPaths;
use super::qmp::QmpClient;
use super::{tsc, vhost_vsock, vsock_helper, Qemu};

/// What QEMU keeps of root's capabilities: its 9p passthrough serves the guest's users, so
/// it must chown (CHOWN), open and list their files (DAC_OVERRIDE, DAC_READ_SEARCH), set
/// their times and modes (FOWNER) and keep setgid bits the guest sets (FSETID). Nothing
/// else: without MKNOD a guest cannot make device nodes in a share, without SETFCAP it
/// cannot give a file capabilities there (both would be host privileges waiting for
/// whoever reaches the file), and SYS_ADMIN, NET_ADMIN and the rest serve nothing QEMU
/// does once its descriptors are open.
pub const QEMU_CAPABILITIES: u64 =
    cap::CHOWN | cap::DAC_OVERRIDE | cap::DAC_READ_SEARCH | cap::FOWNER | cap::FSETID;

/// The descriptor number a program's first passed fd gets (see `Program::pass_fd`).
const FIRST_PASSED_FD: i32 = 3;

pub fn launch(qemu: &Qemu, vm: &VmConfig) -> Result<VmInstance> {
    vm.check_assets()?;
    cmdline::validate(vm)?;
    // QEMU and the helpers run in the run directory: every path they get must be absolute.
    let vm = &vm.with_absolute_paths()?;
    // microvm has neither ACPI nor PCI hotplug: a VM that must be able to grow gets q35,
    // whose boot costs a little more (measured in the closing note of the hotplug work).
    let machine = match (Machine::parse(&qemu.config.machine)?, vm.hotplug) {
        (Machine::Microvm, Some(_)) => Machine::Q35,
        (machine, _) => machine,
    };
    let binary = find_binary(&qemu.config.binary).ok_or_else(|| Error::MissingBinary {
        binary: qemu.config.binary.display().to_string(),
        hint: "apt-get install qemu-system-x86".to_string(),
    })?;
    let run_dir = vm.run_dir.clone();
    let paths = RunPaths::new(&run_dir);
    paths.check_socket_lengths()?;
    let accel = qemu.accel()?;
    // Every process below (helper and its watcher, console keeper, QEMU) joins it.
    let cgroup = CgroupJoin::open(&vm.host_cgroups)?;
    let tsc_khz = match machine {
        Machine::Microvm => tsc::host_tsc_khz(&qemu.cache_dir),
        Machine::Q35 => None,
    };

    let (device, endpoint, vhost_fd, helper) = match vhost_vsock::reserve() {
        Some(reserved) => {
            let reserved = reserved?;
            let cid = reserved.cid;
            (
                VsockDevice::Kernel {
                    cid,
                    vhostfd: Some(FIRST_PASSED_FD),
                },
                VsockEndpoint::Kernel { cid },
                Some(reserved.fd),
                None,
            )
        }
        None => {
            let helper = vsock_helper::start(&qemu.config.vsock_helper, &paths, &cgroup)?;
            (
                VsockDevice::VhostUser {
                    socket: paths.vhost_user.clone(),
                },
                VsockEndpoint::Hybrid {
                    uds: paths.hybrid_uds.clone(),
                },
                None,
                Some(helper),
            )
        }
    };

    // The guest's console reaches its log through the keeper, which bounds it. The keeper
    // ends by itself once QEMU (the pipe's only writer after the launch) is gone.
    let keeper = spawn_console_keeper(&paths.console, CONSOLE_LOG_LIMIT, &cgroup)?;
    let console_fd = FIRST_PASSED_FD + i32::from(vhost_fd.is_some());
    let nic_fds: Vec<i32> = (0..vm.nics.len() as i32)
        .map(|n| console_fd + 1 + n)
        .collect();
    let inputs = Inputs {
        vm,
        machine,
        accel,
        vsock: &device,
        paths: &paths,
        tsc_khz,
        console_fd: Some(console_fd),
        nic_fds: &nic_fds,
    };
    let args = cmdline::qemu_args(&inputs);
    let cpus_preallocated = cmdline::preallocated_cpus(&inputs);
    let mut program = Program::new("qemu", &binary, &args, &run_dir, &paths.qemu_log)?
        .cgroup(&cgroup)?
        .privileges(Privileges::Only(QEMU_CAPABILITIES));
    if let Some(fd) = vhost_fd {
        if program.pass_fd(fd)? != FIRST_PASSED_FD {
            return Err(Error::Config("vhost-vsock descriptor misnumbered".into()));
        }
    }
    if program.pass_fd(keeper.writer)? != console_fd {
        return Err(Error::Config("console descriptor misnumbered".into()));
    }
    for (nic, &fd) in vm.nics.iter().zip(&nic_fds) {
        let tap = nic.tap.try_clone().map_err(|source| Error::Spawn {
            what: "qemu (copying a tap descriptor)".into(),
            source,
        })?;
        if program.pass_fd(tap)? != fd {
            return Err(Error::Config("tap descriptor misnumbered".into()));
        }
    }
    // From here on, an early return drops `helper`, and its watcher stops it.
    let pid = spawn_detached(&program)?;
    let Some(qemu_record) = ProcessRecord::of("qemu", pid) else {
        return Err(qemu_died(&paths));
    };
    let mut processes = vec![qemu_record.clone()];
    // Ends with QEMU; recorded so that `delete --force` finds it whatever happened.
    processes.extend(ProcessRecord::of("console", keeper.pid));
    if let Some(helper) = helper {
        processes.push(helper.helper);
        processes.push(helper.watcher);
        if let Err(e) = helper.supervised.follow(pid) {
            stop_all(&processes, &paths);
            return Err(e);
        }
    }
    if let Err(e) = wait_for_qmp(&paths, &qemu_record, qemu.start_timeout) {
        stop_all(&processes, &paths);
        return Err(e);
    }
    Ok(VmInstance {
        backend: BackendKind::Qemu,
        processes,
        vsock: endpoint,
        control_socket: paths.qmp.clone(),
        console_log: paths.console.clone(),
        description: format!("qemu {machine} {accel}"),
        shared_fs: crate::SharedFs::NineP,
        hotplug: vm
            .hotplug
            .filter(|_| machine == Machine::Q35)
            .map(|room| crate::HotplugRoom {
                cpus_preallocated,
                ..room
            }),
    })
}

/// Waits until QEMU greets on QMP, or has exited, or `timeout` passed.
fn wait_for_qmp(paths: &RunPaths, qemu: &ProcessRecord, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if !qemu.is_alive() {
            return Err(qemu_died(paths));
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(Error::Timeout {
                what: "qemu".into(),
                secs: timeout.as_secs(),
                detail: format!("no answer on {}; {}", paths.qmp.display(), tails(paths)),
            });
        }
        if paths.qmp.exists()
            && QmpClient::connect(&paths.qmp, left.min(Duration::from_secs(5))).is_ok()
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn qemu_died(paths: &RunPaths) -> Error {
    Error::HelperDied {
        what: "qemu".into(),
        status: "exited".into(),
        detail: tails(paths),
    }
}

/// QEMU's own output and the guest console: between them, why a VM did not come up.
fn tails(paths: &RunPaths) -> String {
    format!(
        "its output ({}) ends with:\n{}\nthe guest console ({}) ends with:\n{}",
        paths.qemu_log.display(),
        crate::console_tail(&paths.qemu_log, 20),
        paths.console.display(),
        crate::console_tail(&paths.console, 20)
    )
}

/// Undoes a launch that failed half-way.
fn stop_all(processes: &[ProcessRecord], paths: &RunPaths) {
    runfiles::stop_all(processes, Duration::from_millis(500));
    let _ = paths.remove_sockets();
}
