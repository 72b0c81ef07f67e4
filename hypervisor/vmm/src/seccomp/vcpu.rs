//! vCPU threads (hypervisor/vmm/src/vstate/vcpu.rs): `KVM_RUN`, the register access of the
//! instruction assist and of error reports, and the device emulation of port and MMIO
//! exits: the serial console's log writes, eventfd signals, and the activation of virtio
//! devices when the guest's driver sets DRIVER_OK. Activation starts the device's worker
//! thread (which inherits this filter: so the workers' calls are included here) and
//! negotiates vhost-user with virtiofsd (messages with file descriptors).

use seccompiler::BackendError;

use super::{common, kvm, thread_creation, worker, Rules};

pub fn rules() -> Result<Rules, BackendError> {
    let mut r = common();
    r.allow_arg_in(
        libc::SYS_ioctl,
        1,
        &[
            kvm::KVM_RUN,
            kvm::KVM_GET_REGS,
            kvm::KVM_SET_REGS,
            kvm::KVM_GET_SREGS,
            kvm::KVM_TRANSLATE,
            kvm::KVM_GET_VCPU_EVENTS,
            kvm::KVM_SET_VCPU_EVENTS,
        ],
    )?;
    // The serial console's log is emptied when it reaches its limit.
    r.allow(libc::SYS_ftruncate);
    // Device activation: the worker's epoll set, eventfds, its thread.
    r.allow_all(&[
        libc::SYS_epoll_create1,
        libc::SYS_eventfd2,
        libc::SYS_fcntl,
        libc::SYS_sendmsg,
        libc::SYS_recvmsg,
    ]);
    thread_creation(&mut r)?;
    r.merge(worker::rules()?);
    Ok(r)
}
