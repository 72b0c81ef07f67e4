//! The main thread (hypervisor/vmm/src/vmm.rs), from the moment the VM is built and the
//! API listens: its epoll loop, API requests (CPU hotplug creates and configures vCPUs and
//! starts their threads; disk hotplug opens an image, sizes it, and wires its eventfds
//! into KVM), the shutdown timer thread, kicking vCPU threads with a signal, and teardown.
//! Network card hotplug checks and sets up the tap it is handed like those given at start:
//! three tun ioctls (never TUNSETIFF) and O_NONBLOCK by fcntl.
//! It starts vCPU threads, and through them device workers, so their calls are included.

use seccompiler::{BackendError, SeccompCmpArgLen};

use super::{common, kvm, thread_creation, vcpu, worker, Rules};
use crate::devices::virtio::net::tap;

pub fn rules() -> Result<Rules, BackendError> {
    let mut r = common();
    r.allow_all(&[
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_eventfd2,
        // Disk hotplug: the image is opened, sized by seeking, checked. fcntl: also network
        // card hotplug (O_NONBLOCK on the tap, F_GETFL then F_SETFL).
        libc::SYS_openat,
        libc::SYS_lseek,
        libc::SYS_statx,
        libc::SYS_newfstatat,
        libc::SYS_fstat,
        libc::SYS_fcntl,
        // Teardown: the API and vsock sockets are removed.
        libc::SYS_unlink,
        libc::SYS_unlinkat,
        libc::SYS_shutdown,
    ]);
    r.allow_arg_in(
        libc::SYS_ioctl,
        1,
        &[
            // CPU hotplug: a new vCPU, configured like the boot ones.
            kvm::KVM_CREATE_VCPU,
            kvm::KVM_GET_VCPU_MMAP_SIZE,
            kvm::KVM_SET_CPUID2,
            kvm::KVM_SET_MSRS,
            kvm::KVM_SET_FPU,
            kvm::KVM_GET_LAPIC,
            kvm::KVM_SET_LAPIC,
            kvm::KVM_GET_SREGS,
            kvm::KVM_SET_SREGS,
            kvm::KVM_SET_REGS,
            // Disk hotplug and unplug: queue notifications and interrupts.
            kvm::KVM_IOEVENTFD,
            kvm::KVM_IRQFD,
            worker::FIONBIO,
        ],
    )?;
    // Network card hotplug (Tap::setup): the tap's name and flags, the virtio-net header
    // size, and offloads, which may only be turned all off.
    r.allow_arg_in(libc::SYS_ioctl, 1, &[tap::TUNGETIFF, tap::TUNSETVNETHDRSZ])?;
    r.allow_args_eq(
        libc::SYS_ioctl,
        &[
            (1, SeccompCmpArgLen::Dword, tap::TUNSETOFFLOAD),
            (2, SeccompCmpArgLen::Qword, 0),
        ],
    )?;
    thread_creation(&mut r)?;
    r.merge(vcpu::rules()?);
    Ok(r)
}
