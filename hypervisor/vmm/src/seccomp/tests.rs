use super::*;

#[test]
fn every_class_compiles_to_a_bpf_program() {
    for class in ThreadClass::ALL {
        let program = class.program().unwrap_or_else(|e| panic!("{class:?}: {e}"));
        // More than the architecture check and the default action.
        assert!(
            program.len() > 10,
            "{class:?}: {} instructions",
            program.len()
        );
    }
    assert!(!no_clone3_program().expect("clone3 filter").is_empty());
}

/// A filter admits what the threads its thread creates need (they inherit it).
#[test]
fn parents_admit_their_childrens_calls() {
    let vmm = ThreadClass::Vmm.rules().expect("vmm");
    let vcpu = ThreadClass::Vcpu.rules().expect("vcpu");
    let worker = ThreadClass::Worker.rules().expect("worker");
    for (nr, _) in worker.0.iter() {
        assert!(vcpu.mentions(*nr), "vCPU filter lacks worker call {nr}");
    }
    for (nr, _) in vcpu.0.iter() {
        assert!(vmm.mentions(*nr), "VMM filter lacks vCPU call {nr}");
    }
}

#[test]
fn what_no_thread_may_do() {
    for class in ThreadClass::ALL {
        let r = class.rules().expect("rules");
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_setuid,
            libc::SYS_init_module,
            libc::SYS_bpf,
            libc::SYS_process_vm_writev,
            libc::SYS_setns,
            libc::SYS_unshare,
        ] {
            assert!(!r.mentions(nr), "{class:?} allows system call {nr}");
        }
        // Threads may be created, processes not: clone only with CLONE_THREAD.
        assert!(
            !r.allows_any_args(libc::SYS_clone),
            "{class:?}: clone unrestricted"
        );
        // ioctl, socket and prctl are always restricted by argument.
        assert!(!r.allows_any_args(libc::SYS_prctl), "{class:?}: any prctl");
        assert!(!r.allows_any_args(libc::SYS_ioctl), "{class:?}: any ioctl");
        assert!(
            !r.allows_any_args(libc::SYS_socket),
            "{class:?}: any socket"
        );
    }
    let worker = ThreadClass::Worker.rules().expect("worker");
    assert!(!worker.mentions(libc::SYS_openat), "workers open no files");
    assert!(
        !worker.mentions(libc::SYS_clone3),
        "workers start no threads"
    );
    // What the VM's construction does once, before any filter: never again afterwards.
    let vmm = ThreadClass::Vmm.rules().expect("vmm");
    let ioctls = &vmm.0[&libc::SYS_ioctl];
    let program = |rules: Vec<SeccompRule>| {
        let mut map = BTreeMap::new();
        map.insert(libc::SYS_ioctl, rules);
        format!("{map:?}")
    };
    let allowed = program(ioctls.clone());
    for request in [
        kvm::KVM_CREATE_VM,
        kvm::KVM_SET_USER_MEMORY_REGION,
        kvm::KVM_CREATE_IRQCHIP,
        kvm::KVM_SET_TSS_ADDR,
        kvm::KVM_GET_SUPPORTED_CPUID,
        kvm::KVM_GET_API_VERSION,
        kvm::KVM_CHECK_EXTENSION,
        kvm::KVM_SET_IDENTITY_MAP_ADDR,
    ] {
        assert!(
            !allowed.contains(&format!("value: {request}")),
            "the VMM thread may still make ioctl {request:#x}"
        );
    }
    assert!(allowed.contains(&format!("value: {}", kvm::KVM_IRQFD)));
    let api = ThreadClass::Api.rules().expect("api");
    assert!(!api.mentions(libc::SYS_ioctl), "the API makes no ioctl");
}

/// virtio-net's tap is checked and configured on the main thread: a `--net` tap before any
/// filter, a hot-added one under the VMM filter, which allows those three ioctls (offloads
/// only turned off). The worker only reads and writes frames; no other thread may touch the
/// tap's configuration, and none may attach it elsewhere (TUNSETIFF).
#[test]
fn the_tap_is_only_read_and_written() {
    use crate::devices::virtio::net::tap;
    let worker = ThreadClass::Worker.rules().expect("worker");
    for nr in [
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_wait,
    ] {
        assert!(
            worker.allows_any_args(nr),
            "the worker cannot make call {nr}"
        );
    }
    // TUNSETIFF (attach the queue elsewhere) is not numbered in tap.rs: the device never
    // makes it.
    const TUNSETIFF: u64 = 0x4004_54ca;
    for class in ThreadClass::ALL {
        let r = class.rules().expect("rules");
        let Some(ioctls) = r.0.get(&libc::SYS_ioctl) else {
            continue;
        };
        let mut map = BTreeMap::new();
        map.insert(libc::SYS_ioctl, ioctls.clone());
        let allowed = format!("{map:?}");
        if class == ThreadClass::Worker {
            // The check below can see an allowed request.
            assert!(allowed.contains(&format!("value: {}", worker::FIONBIO)));
        }
        assert!(
            !allowed.contains(&format!("value: {TUNSETIFF}")),
            "{class:?} may make TUNSETIFF"
        );
        for request in [tap::TUNGETIFF, tap::TUNSETOFFLOAD, tap::TUNSETVNETHDRSZ] {
            assert_eq!(
                allowed.contains(&format!("value: {request}")),
                class == ThreadClass::Vmm,
                "{class:?} and tap ioctl {request:#x}"
            );
        }
    }
}

/// Runs system call `nr` with `args` in a forked child under `class`'s filter: whether the
/// filter let it through (whatever the call then returned) rather than trapping.
fn filter_admits(class: ThreadClass, nr: libc::c_long, args: [u64; 3]) -> bool {
    let program = class.program().expect("program");
    // SAFETY: the child only makes async-signal-safe calls (close, sigaction, prctl, seccomp,
    // the call under test, _exit) and touches memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: in the child, see above.
        unsafe {
            // The SIGSYS handler's line is not wanted in the test's output.
            libc::close(2);
            if install_sigsys_handler().is_err() || seccompiler::apply_filter(&program).is_err() {
                libc::_exit(2);
            }
            libc::syscall(nr, args[0], args[1], args[2]);
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: pid is our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    match libc::WEXITSTATUS(status) {
        0 => true,
        SIGSYS_EXIT => false,
        other => panic!("the child could not install the {class:?} filter ({other})"),
    }
}

/// What network card hotplug needs, checked against the compiled filters: the calls are
/// made on a descriptor that is not open (-1), so they fail harmlessly once admitted.
#[test]
fn network_card_hotplug_calls_are_admitted_where_made() {
    use crate::devices::virtio::net::tap;
    let ioctl = |class, request: u64, arg: u64| {
        filter_admits(class, libc::SYS_ioctl, [u64::MAX, request, arg])
    };
    // The main thread sets the received tap up.
    assert!(ioctl(ThreadClass::Vmm, tap::TUNGETIFF, 0));
    assert!(ioctl(ThreadClass::Vmm, tap::TUNSETVNETHDRSZ, 0));
    assert!(ioctl(ThreadClass::Vmm, tap::TUNSETOFFLOAD, 0));
    assert!(filter_admits(
        ThreadClass::Vmm,
        libc::SYS_fcntl,
        [u64::MAX, libc::F_SETFL as u64, libc::O_NONBLOCK as u64]
    ));
    // Offloads may only be turned off, all 64 bits of the argument compared.
    assert!(!ioctl(ThreadClass::Vmm, tap::TUNSETOFFLOAD, 1));
    assert!(!ioctl(ThreadClass::Vmm, tap::TUNSETOFFLOAD, 1 << 32));
    assert!(!ioctl(ThreadClass::Vmm, 0x4004_54ca, 0), "TUNSETIFF");
    for class in [ThreadClass::Vcpu, ThreadClass::Worker, ThreadClass::Api] {
        assert!(!ioctl(class, tap::TUNGETIFF, 0), "{class:?}");
        assert!(!ioctl(class, tap::TUNSETOFFLOAD, 0), "{class:?}");
    }
    // The API threads receive the tap with its request line.
    assert!(filter_admits(
        ThreadClass::Api,
        libc::SYS_recvmsg,
        [u64::MAX, 0, 0]
    ));
}

/// In a forked child: the worker filter installed, an allowed call works, a forbidden one
/// traps, and the SIGSYS handler names the class and the call on stderr and exits 159.
#[test]
fn a_forbidden_call_traps_with_a_message() {
    let program = ThreadClass::Worker.program().expect("worker program");
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array it is given.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the child only makes async-signal-safe calls (dup2, prctl, seccomp, a system
    // call, write, _exit) and touches memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: in the child, see above; no Rust runtime state is relied upon.
        unsafe {
            libc::dup2(fds[1], 2);
            if install_sigsys_handler().is_err() || seccompiler::apply_filter(&program).is_err() {
                libc::_exit(2);
            }
            CLASS.with(|c| c.set(ThreadClass::Worker.name()));
            if libc::syscall(libc::SYS_gettid) <= 0 {
                libc::_exit(3);
            }
            // Not on the worker's list: traps.
            libc::syscall(libc::SYS_getppid);
            libc::_exit(4);
        }
    }
    // SAFETY: closing our copy of the write end, so the read below sees EOF.
    unsafe { libc::close(fds[1]) };
    let mut status = 0;
    // SAFETY: pid is our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    let mut out = vec![0u8; 512];
    // SAFETY: out is a writable buffer of the given length.
    let n = unsafe { libc::read(fds[0], out.as_mut_ptr().cast(), out.len()) };
    // SAFETY: our read end.
    unsafe { libc::close(fds[0]) };
    let text = String::from_utf8_lossy(&out[..n.max(0) as usize]).to_string();
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), SIGSYS_EXIT, "child said: {text}");
    assert_eq!(
        text,
        format!(
            "ward-vmm: seccomp: the device worker thread made system call {}, which its \
             filter forbids; stopping the VM\n",
            libc::SYS_getppid
        )
    );
}

#[test]
fn the_message_buffer_formats_numbers() {
    let mut line = Line::default();
    line.push_int(0);
    line.push(b" ");
    line.push_int(-17);
    line.push(b" ");
    line.push_int(i64::MAX);
    assert_eq!(&line.buf[..line.len], b"0 -17 9223372036854775807");
}

/// A `Write` many threads share, for reading back what a logger wrote.
#[derive(Clone, Default)]
struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::ErrorKind::Other)?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every thread class may log, from its first line on and again after a pause: a logger
/// that touches files (chrono's local time zone re-reading /etc/localtime) traps under
/// the vCPU and worker filters, which ended ward-vmm in L1. A trap here kills the test
/// binary with SIGSYS (no handler is installed), which fails the run.
#[test]
fn every_thread_class_may_log() {
    let out = SharedBuf::default();
    let log = crate::logging::logger(slog::Level::Debug, out.clone());
    for class in ThreadClass::ALL {
        let program = class.program().expect("program");
        let log = log.clone();
        std::thread::spawn(move || {
            // Per thread, without TSYNC: the test's other threads stay unfiltered.
            seccompiler::apply_filter(&program).expect("installing the filter");
            slog::info!(log, "first line"; "class" => class.name());
            // chrono re-checks the zone file once a second or more apart.
            std::thread::sleep(std::time::Duration::from_millis(1100));
            slog::warn!(log, "second line"; "class" => class.name());
        })
        .join()
        .expect("the filtered thread panicked");
    }
    let text = String::from_utf8_lossy(&out.0.lock().unwrap()).to_string();
    for class in ThreadClass::ALL {
        for line in ["first line", "second line"] {
            assert!(
                text.lines()
                    .any(|l| l.contains(line) && l.contains(&format!("class: {}", class.name()))),
                "no {line:?} from {}: {text}",
                class.name()
            );
        }
    }
}
