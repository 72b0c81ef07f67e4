use std::path::PathBuf;

use super::*;
use crate::SharedDir;

fn vm() -> VmConfig {
    VmConfig {
        id: "c1".into(),
        run_dir: "/run/ward/c1".into(),
        kernel: "/k/vmlinux".into(),
        initrd: "/k/initrd.img".into(),
        extra_kernel_params: " ward.debug=1 ".into(),
        vcpus: 1,
        memory_mib: 256,
        shared_dirs: vec![
            SharedDir {
                tag: "rootfs".into(),
                host_path: "/var/lib/ward/c1/rootfs".into(),
                read_only: false,
            },
            SharedDir {
                tag: "ro".into(),
                host_path: "/data/a,b".into(),
                read_only: true,
            },
        ],
        hotplug: None,
        host_cgroups: Vec::new(),
        nics: Vec::new(),
    }
}

fn args(vm: &VmConfig, machine: Machine, accel: Accel, vsock: &VsockDevice) -> Vec<String> {
    let paths = RunPaths::new(&vm.run_dir);
    qemu_args(&Inputs {
        vm,
        machine,
        accel,
        vsock,
        paths: &paths,
        tsc_khz: Some(2_000_000),
        console_fd: None,
        nic_fds: &[],
    })
    .into_iter()
    .map(|a| a.into_string().expect("utf-8"))
    .collect()
}

fn hybrid() -> VsockDevice {
    VsockDevice::VhostUser {
        socket: PathBuf::from("/run/ward/c1/vhost-vsock.sock"),
    }
}

/// The value following `flag` each time it occurs.
fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

#[test]
fn microvm_tcg_with_vhost_user_vsock() {
    let args = args(&vm(), Machine::Microvm, Accel::Tcg, &hybrid());
    for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
        assert!(args.iter().any(|a| a == flag), "{flag} missing: {args:?}");
    }
    assert_eq!(values(&args, "-accel"), ["tcg,tb-size=256"]);
    assert_eq!(
        values(&args, "-sandbox"),
        ["on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
    );
    assert_eq!(values(&args, "-cpu"), ["max"]);
    assert_eq!(values(&args, "-smp"), ["1"]);
    assert_eq!(values(&args, "-m"), ["256M"]);
    assert_eq!(
        values(&args, "-object"),
        ["memory-backend-memfd,id=mem,size=256M,share=on"]
    );
    let machine = values(&args, "-machine")[0];
    assert!(machine.starts_with("microvm,"), "{machine}");
    assert!(machine.ends_with(",memory-backend=mem"), "{machine}");
    assert_eq!(values(&args, "-kernel"), ["/k/vmlinux"]);
    assert_eq!(values(&args, "-initrd"), ["/k/initrd.img"]);
    assert_eq!(
        values(&args, "-append"),
        ["console=ttyS0 reboot=t panic=-1 quiet tsc_early_khz=2000000 ward.debug=1"]
    );
    assert_eq!(
        values(&args, "-chardev"),
        [
            "file,id=console,path=/run/ward/c1/console.log",
            "socket,id=qmp,path=/run/ward/c1/qmp.sock,server=on,wait=off",
            "socket,id=vsock,path=/run/ward/c1/vhost-vsock.sock",
        ]
    );
    assert_eq!(values(&args, "-serial"), ["chardev:console"]);
    assert_eq!(values(&args, "-mon"), ["chardev=qmp,mode=control"]);
    assert_eq!(
        values(&args, "-device"),
        [
            "virtio-9p-device,fsdev=fs0,mount_tag=rootfs",
            "virtio-9p-device,fsdev=fs1,mount_tag=ro",
            "vhost-user-vsock-device,chardev=vsock",
        ]
    );
}

#[test]
fn shared_dirs_escape_commas_and_honour_read_only() {
    let args = args(&vm(), Machine::Microvm, Accel::Tcg, &hybrid());
    assert_eq!(
        values(&args, "-fsdev"),
        [
            "local,id=fs0,path=/var/lib/ward/c1/rootfs,security_model=passthrough,multidevs=remap",
            "local,id=fs1,path=/data/a,,b,security_model=passthrough,multidevs=remap,readonly=on",
        ]
    );
}

#[test]
fn q35_kvm_smp_with_kernel_vsock() {
    let mut vm = vm();
    vm.vcpus = 2;
    vm.extra_kernel_params.clear();
    let vsock = VsockDevice::Kernel {
        cid: 42,
        vhostfd: Some(3),
    };
    let args = args(&vm, Machine::Q35, Accel::Kvm, &vsock);
    assert_eq!(values(&args, "-accel"), ["kvm"]);
    assert_eq!(values(&args, "-cpu"), ["host"]);
    assert_eq!(values(&args, "-smp"), ["2"]);
    assert!(values(&args, "-machine")[0].starts_with("q35,"));
    // No TSC hint outside microvm, no trailing blank without extra parameters.
    assert_eq!(values(&args, "-append"), [BASE_KERNEL_PARAMS]);
    assert_eq!(
        values(&args, "-device"),
        [
            "virtio-9p-pci,fsdev=fs0,mount_tag=rootfs",
            "virtio-9p-pci,fsdev=fs1,mount_tag=ro",
            "vhost-vsock-pci,guest-cid=42,vhostfd=3",
        ]
    );
}

#[test]
fn multi_vcpu_tcg_uses_one_thread_per_vcpu() {
    let mut vm = vm();
    vm.vcpus = 4;
    let args = args(&vm, Machine::Microvm, Accel::Tcg, &hybrid());
    assert_eq!(values(&args, "-accel"), ["tcg,tb-size=256,thread=multi"]);
}

#[test]
fn names_with_commas_stay_one_option() {
    let mut vm = vm();
    vm.id = "a,b".into();
    let args = args(&vm, Machine::Microvm, Accel::Tcg, &hybrid());
    assert_eq!(values(&args, "-name"), ["guest=a,,b"]);
}

#[test]
fn machine_names_and_validation() {
    assert_eq!(
        Machine::parse("microvm").expect("microvm"),
        Machine::Microvm
    );
    assert_eq!(Machine::parse("q35").expect("q35"), Machine::Q35);
    assert!(Machine::parse("pc").is_err());
    assert_eq!(Machine::Q35.to_string(), "q35");

    assert!(validate(&vm()).is_ok());
    let mut bad = vm();
    bad.shared_dirs[0].tag = "t".repeat(32);
    assert!(validate(&bad).is_err());
    let mut bad = vm();
    bad.vcpus = 0;
    assert!(validate(&bad).is_err());
}

#[test]
fn the_console_goes_through_the_keepers_pipe_when_there_is_one() {
    let vm = vm();
    let paths = RunPaths::new(&vm.run_dir);
    let args: Vec<String> = qemu_args(&Inputs {
        vm: &vm,
        machine: Machine::Microvm,
        accel: Accel::Tcg,
        vsock: &hybrid(),
        paths: &paths,
        tsc_khz: None,
        console_fd: Some(4),
        nic_fds: &[],
    })
    .into_iter()
    .map(|a| a.into_string().expect("utf-8"))
    .collect();
    assert_eq!(values(&args, "-add-fd"), ["fd=4,set=1"]);
    assert_eq!(
        values(&args, "-chardev")[0],
        "file,id=console,path=/dev/fdset/1,append=on"
    );
    assert_eq!(values(&args, "-serial"), ["chardev:console"]);
}

#[test]
fn each_nic_is_a_tap_netdev_with_the_interfaces_mac_and_mtu() {
    let mut vm = vm();
    let tap = std::sync::Arc::new(std::os::fd::OwnedFd::from(
        std::fs::File::open("/dev/null").unwrap(),
    ));
    vm.nics = vec![
        crate::Nic {
            tap: tap.clone(),
            mac: [0x0a, 0x58, 0x0a, 0x58, 0, 2],
            mtu: 1400,
        },
        crate::Nic {
            tap,
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 9000,
        },
    ];
    for (machine, transport) in [(Machine::Q35, "pci"), (Machine::Microvm, "device")] {
        let paths = RunPaths::new(&vm.run_dir);
        let args: Vec<String> = qemu_args(&Inputs {
            vm: &vm,
            machine,
            accel: Accel::Kvm,
            vsock: &hybrid(),
            paths: &paths,
            tsc_khz: None,
            console_fd: Some(4),
            nic_fds: &[5, 6],
        })
        .into_iter()
        .map(|a| a.into_string().expect("utf-8"))
        .collect();
        assert_eq!(
            values(&args, "-netdev"),
            ["tap,id=net0,fd=5,vhost=off", "tap,id=net1,fd=6,vhost=off"]
        );
        let devices = values(&args, "-device");
        assert!(
            devices.contains(
                &format!("virtio-net-{transport},netdev=net0,mac=0a:58:0a:58:00:02,host_mtu=1400")
                    .as_str()
            ),
            "{devices:?}"
        );
        assert!(
            devices.contains(
                &format!("virtio-net-{transport},netdev=net1,mac=02:00:00:00:00:01,host_mtu=9000")
                    .as_str()
            ),
            "{devices:?}"
        );
    }
}
