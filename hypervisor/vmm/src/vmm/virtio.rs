//! A virtio device in a virtio-mmio slot: its transport on the MMIO bus, its interrupt
//! line as an irqfd, its queue notifications as ioeventfds.

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout;
use crate::bus::{Bus, BusDevice};
use crate::config::{DiskConfig, FsConfig, NetConfig, VsockConfig};
use crate::devices::virtio::{
    block, fs, net, rng, vsock, GuestMem, IrqfdInterrupt, MmioTransport, VirtioDevice, MMIO_WINDOW,
    NOTIFY_REG_OFFSET,
};
use crate::vstate::vm::Vm;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no virtio-mmio slot {0}: at most {max} devices", max = layout::VIRTIO_MMIO_SLOTS)]
    NoSlot(u32),
    #[error("{device}: {source}")]
    Device {
        device: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

#[derive(Debug, Clone)]
pub enum VirtioKind {
    Block(DiskConfig),
    /// The tap is checked and set up when the kind is made ([`VirtioKind::net`] for the
    /// command line's, [`VirtioKind::hot_net`] for the API's). Only hot-added cards have an
    /// `id`, which names them for their removal.
    Net {
        id: Option<String>,
        config: NetConfig,
        tap: Arc<net::Tap>,
    },
    Vsock(VsockConfig),
    Fs(FsConfig),
    Rng,
}

/// virtio-fs: one request queue (the guest's FUSE traffic goes straight to virtiofsd),
/// of the size virtiofsd and Linux commonly use.
const FS_REQUEST_QUEUES: usize = 1;
const FS_QUEUE_SIZE: u16 = 1024;

impl VirtioKind {
    /// A virtio-net device on the inherited tap `config.fd`, which is checked and set up
    /// here (before any seccomp filter: its ioctls are allowed to no thread afterwards).
    pub fn net(config: &NetConfig) -> Result<Self, Error> {
        let tap = net::Tap::open(config.fd).map_err(|e| Error::Device {
            device: format!("virtio-net {} (tap fd {})", config.mac_string(), config.fd),
            source: Box::new(e),
        })?;
        Ok(VirtioKind::Net {
            id: None,
            config: config.clone(),
            tap: Arc::new(tap),
        })
    }

    /// A hot-added virtio-net device named `id` on `tap`, a descriptor received over the
    /// control socket, which is checked and set up here like [`VirtioKind::net`]'s (under
    /// the main thread's seccomp filter, which allows these ioctls) and closed on failure.
    pub fn hot_net(
        id: String,
        mac: [u8; 6],
        mtu: Option<u16>,
        tap: std::os::fd::OwnedFd,
    ) -> Result<Self, Error> {
        use std::os::fd::AsRawFd;
        let config = NetConfig {
            fd: tap.as_raw_fd(),
            mac,
            mtu,
        };
        let tap = net::Tap::from_owned(tap).map_err(|e| Error::Device {
            device: format!("virtio-net {id} ({})", config.mac_string()),
            source: Box::new(e),
        })?;
        Ok(VirtioKind::Net {
            id: Some(id),
            config,
            tap: Arc::new(tap),
        })
    }

    fn describe(&self) -> String {
        match self {
            VirtioKind::Block(d) => format!(
                "virtio-blk {} ({}{})",
                d.id,
                d.path.display(),
                if d.readonly { ", read-only" } else { "" }
            ),
            VirtioKind::Net {
                id: Some(id),
                config,
                tap,
            } => format!(
                "virtio-net {id} ({}, tap {})",
                config.mac_string(),
                tap.name()
            ),
            VirtioKind::Net {
                id: None,
                config,
                tap,
            } => format!("virtio-net {} (tap {})", config.mac_string(), tap.name()),
            VirtioKind::Vsock(v) => format!("virtio-vsock cid {} ({})", v.cid, v.uds.display()),
            VirtioKind::Fs(f) => format!("virtio-fs {} ({})", f.tag, f.socket.display()),
            VirtioKind::Rng => "virtio-rng".into(),
        }
    }

    fn build(&self) -> Result<Box<dyn VirtioDevice>, Error> {
        let fail = |e: Box<dyn std::error::Error + Send + Sync>| Error::Device {
            device: self.describe(),
            source: e,
        };
        Ok(match self {
            VirtioKind::Block(d) => Box::new(
                block::Block::new(&block::BlockConfig {
                    path: d.path.clone(),
                    read_only: d.readonly,
                    id: d.id.clone(),
                })
                .map_err(|e| fail(Box::new(e)))?,
            ),
            VirtioKind::Net { config, tap, .. } => {
                Box::new(net::Net::new(tap.clone(), config.mac, config.mtu))
            }
            VirtioKind::Vsock(v) => Box::new(
                vsock::Vsock::new(u64::from(v.cid), &v.uds).map_err(|e| fail(Box::new(e)))?,
            ),
            VirtioKind::Fs(f) => Box::new(
                fs::Fs::new(&f.tag, &f.socket, FS_REQUEST_QUEUES, FS_QUEUE_SIZE)
                    .map_err(|e| fail(Box::new(e)))?,
            ),
            VirtioKind::Rng => Box::new(rng::Rng::new()),
        })
    }
}

/// The transport as a bus device.
struct MmioDevice(MmioTransport);

impl BusDevice for MmioDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.0.read(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0.write(offset, data);
    }
}

pub struct VirtioSlot {
    pub slot: u32,
    pub base: u64,
    pub irq: u32,
    pub kind: VirtioKind,
    /// The guest was asked to let go of it.
    pub removing: bool,
    transport: Arc<Mutex<MmioDevice>>,
    interrupt: Arc<IrqfdInterrupt>,
}

impl VirtioSlot {
    /// Builds the device and wires it into slot `slot`.
    pub fn create(
        vm: &Vm,
        mem: &GuestMem,
        mmio: &Bus,
        slot: u32,
        kind: VirtioKind,
    ) -> Result<Self, Error> {
        let (base, irq) = layout::virtio_slot(slot).ok_or(Error::NoSlot(slot))?;
        let fail = |e: Box<dyn std::error::Error + Send + Sync>| Error::Device {
            device: kind.describe(),
            source: e,
        };
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| fail(Box::new(e)))?;
        let interrupt = Arc::new(IrqfdInterrupt::new(evt));
        vm.register_irqfd(interrupt.eventfd(), irq)
            .map_err(|e| fail(Box::new(e)))?;
        let transport = MmioTransport::new(mem.clone(), kind.build()?, interrupt.clone())
            .map_err(|e| fail(Box::new(e)))?;
        for (i, evt) in transport.queue_evts().iter().enumerate() {
            vm.register_ioevent(evt, base + NOTIFY_REG_OFFSET, i as u32)
                .map_err(|e| fail(Box::new(e)))?;
        }
        let transport = Arc::new(Mutex::new(MmioDevice(transport)));
        mmio.insert(&kind.describe(), base, MMIO_WINDOW, transport.clone())
            .map_err(|e| fail(Box::new(e)))?;
        Ok(VirtioSlot {
            slot,
            base,
            irq,
            kind,
            removing: false,
            transport,
            interrupt,
        })
    }

    pub fn describe(&self) -> String {
        self.kind.describe()
    }

    pub fn disk_id(&self) -> Option<&str> {
        match &self.kind {
            VirtioKind::Block(d) => Some(&d.id),
            _ => None,
        }
    }

    /// The id of a hot-added network card (those given at start have none).
    pub fn net_id(&self) -> Option<&str> {
        match &self.kind {
            VirtioKind::Net { id, .. } => id.as_deref(),
            _ => None,
        }
    }

    /// Unwires the device; it stops when the last reference goes.
    pub fn detach(&self, vm: &Vm, mmio: &Bus) {
        mmio.remove(self.base);
        let t = self.transport.lock().unwrap_or_else(|e| e.into_inner());
        for (i, evt) in t.0.queue_evts().iter().enumerate() {
            let _ = vm.unregister_ioevent(evt, self.base + NOTIFY_REG_OFFSET, i as u32);
        }
        let _ = vm.unregister_irqfd(self.interrupt.eventfd(), self.irq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_net_device_needs_an_open_tap() {
        let config = NetConfig {
            fd: 1 << 20,
            mac: [2, 0, 0, 0, 0, 1],
            mtu: None,
        };
        let Err(e) = VirtioKind::net(&config) else {
            panic!("fd {} was taken for a tap", config.fd);
        };
        let text = format!(
            "{e}: {}",
            std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        assert!(
            text.starts_with("virtio-net 02:00:00:00:00:01 (tap fd 1048576): tap fd 1048576 is not an open file descriptor"),
            "{text}"
        );
    }
}
