//! The KVM VM: in-kernel interrupt controllers and PIT, guest memory slots, and the
//! eventfd plumbing (irqfd for device interrupts, ioeventfd for queue notifications).

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{Address, GuestMemory, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::memory::GuestMemoryMmap;
use crate::arch::x86_64::layout;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening /dev/kvm: {0}")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not the supported 12")]
    ApiVersion(i32),
    #[error("KVM lacks a required capability: {0}")]
    MissingCap(&'static str),
    #[error("creating the KVM VM: {0}")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("KVM {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("registering guest memory slot {slot} at {addr:#x}: {source}")]
    MemorySlot {
        slot: u32,
        addr: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("registering an irqfd for GSI {gsi}: {source}")]
    Irqfd {
        gsi: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("(un)registering an ioeventfd at {addr:#x}: {source}")]
    Ioeventfd {
        addr: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
}

pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
}

impl Vm {
    /// A VM with an in-kernel IRQ chip (PIC, IOAPIC, LAPICs) and PIT.
    pub fn new() -> Result<Self, Error> {
        let kvm = Kvm::new().map_err(Error::OpenKvm)?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(Error::ApiVersion(version));
        }
        for (cap, name) in [
            (kvm_ioctls::Cap::Irqchip, "KVM_CAP_IRQCHIP"),
            (kvm_ioctls::Cap::Irqfd, "KVM_CAP_IRQFD"),
            (kvm_ioctls::Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
            (kvm_ioctls::Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (kvm_ioctls::Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(Error::MissingCap(name));
            }
        }
        let fd = kvm.create_vm().map_err(Error::CreateVm)?;
        // On Intel hosts KVM needs these pages for real-mode emulation; they sit in the
        // MMIO hole where no RAM or device is.
        fd.set_identity_map_address(layout::KVM_IDENTITY_MAP_START)
            .map_err(|source| Error::Setup {
                what: "identity map address",
                source,
            })?;
        fd.set_tss_address(layout::KVM_TSS_START as usize)
            .map_err(|source| Error::Setup {
                what: "TSS address",
                source,
            })?;
        fd.create_irq_chip().map_err(|source| Error::Setup {
            what: "in-kernel IRQ chip",
            source,
        })?;
        // A PIT: Linux calibrates its TSC against it when no better clock is known.
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(|source| Error::Setup {
            what: "in-kernel PIT",
            source,
        })?;
        Ok(Vm { kvm, fd })
    }

    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Gives every region of `mem` to KVM as one memory slot.
    pub fn register_memory(&self, mem: &GuestMemoryMmap) -> Result<(), Error> {
        for (slot, region) in mem.iter().enumerate() {
            let slot = slot as u32;
            let addr = region.start_addr().raw_value();
            let host =
                mem.get_host_address(region.start_addr())
                    .map_err(|_| Error::MemorySlot {
                        slot,
                        addr,
                        source: kvm_ioctls::Error::new(libc::EFAULT),
                    })?;
            let r = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: addr,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the host range belongs to `mem`'s mapping, which outlives the VM:
            // the caller keeps the guest memory alive as long as this VM.
            unsafe { self.fd.set_user_memory_region(r) }.map_err(|source| Error::MemorySlot {
                slot,
                addr,
                source,
            })?;
        }
        Ok(())
    }

    /// Writing to `evt` raises (edge) GSI `gsi` on the in-kernel IOAPIC.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), Error> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|source| Error::Irqfd { gsi, source })
    }

    /// A guest write of `datamatch` (32-bit) to MMIO `addr` signals `evt` in the kernel,
    /// without a VM exit to this process.
    pub fn register_ioevent(&self, evt: &EventFd, addr: u64, datamatch: u32) -> Result<(), Error> {
        self.fd
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), datamatch)
            .map_err(|source| Error::Ioeventfd { addr, source })
    }

    pub fn unregister_ioevent(
        &self,
        evt: &EventFd,
        addr: u64,
        datamatch: u32,
    ) -> Result<(), Error> {
        self.fd
            .unregister_ioevent(evt, &IoEventAddress::Mmio(addr), datamatch)
            .map_err(|source| Error::Ioeventfd { addr, source })
    }

    pub fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), Error> {
        self.fd
            .unregister_irqfd(evt, gsi)
            .map_err(|source| Error::Irqfd { gsi, source })
    }
}
