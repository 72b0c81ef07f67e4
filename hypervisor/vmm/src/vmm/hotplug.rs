//! Growing and shrinking the running VM: vCPUs, disks and network cards come and go in two
//! steps, the VMM announcing the change through the GED and the guest acting on it (for
//! removal, ejecting the CPU or slot, which the main loop then finishes). Disks and network
//! cards share the hotplug slots.

use std::os::fd::OwnedFd;

use slog::{info, warn};

use super::virtio::{VirtioKind, VirtioSlot};
use super::{Vmm, HOTPLUG_SLOTS};
use crate::config::{DiskConfig, MAX_NETS};
use crate::devices::hotplug::cpu::UnitState;
use crate::devices::hotplug::ged;

const ID_RULE: &str = "id must be 1 to 20 of [A-Za-z0-9_.-]";

impl Vmm {
    pub(super) fn set_vcpus(&mut self, count: u32) -> Result<(), String> {
        let Some(h) = &self.hotplug else {
            return Err("vCPU hotplug needs ACPI (ward-vmm was started with --no-acpi)".into());
        };
        if count == 0 || count > self.max_vcpus {
            return Err(format!(
                "count must be 1 to {} (--max-vcpus)",
                self.max_vcpus
            ));
        }
        let online = self.online_vcpus() as u32;
        let cpus = h.cpus.clone();
        let ged = h.ged.clone();
        if count > online {
            for id in 0..count {
                if self.vcpus[id as usize].is_some() {
                    // Still plugged: a removal the guest has not acted on is called off.
                    cpus.lock().unwrap_or_else(|e| e.into_inner()).units[id as usize].removing =
                        false;
                    continue;
                }
                self.start_vcpu(id).map_err(|e| e.to_string())?;
                let mut s = cpus.lock().unwrap_or_else(|e| e.into_inner());
                s.units[id as usize] = UnitState {
                    present: true,
                    inserting: true,
                    removing: false,
                };
            }
        } else {
            let mut s = cpus.lock().unwrap_or_else(|e| e.into_inner());
            // The highest IDs go first; vCPU 0 never does.
            for id in (count.max(1)..self.max_vcpus).rev() {
                if s.units[id as usize].present {
                    s.units[id as usize].removing = true;
                }
            }
        }
        ged.notify(ged::EVENT_CPU)
            .map_err(|e| format!("signalling the guest: {e}"))?;
        info!(self.log, "vCPU count change requested"; "from" => online, "to" => count);
        Ok(())
    }

    /// The guest ejected CPUs (after offlining them): stop their threads.
    pub(super) fn finish_cpu_ejects(&mut self) {
        let Some(h) = &self.hotplug else {
            return;
        };
        let _ = h.cpu_eject.read();
        let ejected: Vec<u32> = {
            let mut s = h.cpus.lock().unwrap_or_else(|e| e.into_inner());
            let ids = std::mem::take(&mut s.ejected);
            for &id in &ids {
                s.units[id as usize] = UnitState::default();
            }
            ids
        };
        for id in ejected {
            if id == 0 {
                warn!(self.log, "the guest ejected the boot vCPU; keeping it");
                continue;
            }
            self.stop_vcpu(id);
            info!(self.log, "vCPU removed"; "vcpu" => id);
        }
    }

    pub(super) fn add_disk(&mut self, disk: DiskConfig) -> Result<(), String> {
        if !crate::config::valid_id(&disk.id) {
            return Err(ID_RULE.into());
        }
        if self
            .virtio
            .iter()
            .any(|s| s.disk_id() == Some(disk.id.as_str()))
        {
            return Err(format!("a disk with id {:?} is already attached", disk.id));
        }
        if self.hotplug.is_none() {
            return Err("disk hotplug needs ACPI (ward-vmm was started with --no-acpi)".into());
        }
        let id = disk.id.clone();
        let slot = self.free_slot()?;
        self.plug(slot, VirtioKind::Block(disk))?;
        info!(self.log, "disk attached"; "id" => id, "slot" => slot);
        Ok(())
    }

    pub(super) fn remove_disk(&mut self, id: &str) -> Result<(), String> {
        if self.hotplug.is_none() {
            return Err("disk hotplug needs ACPI (ward-vmm was started with --no-acpi)".into());
        }
        let Some(pos) = self.virtio.iter().position(|s| s.disk_id() == Some(id)) else {
            return Err(format!("no disk with id {id:?}"));
        };
        if self.virtio[pos].slot < self.first_hotplug_slot {
            return Err(format!(
                "disk {id:?} was given on the command line; only hot-added disks can be removed"
            ));
        }
        let slot = self.unplug(pos)?;
        info!(self.log, "disk removal requested"; "id" => id, "slot" => slot);
        Ok(())
    }

    /// Hot-adds a virtio-net card on `tap` (received over the control socket): checked and
    /// set up like a `--net` tap, on a free hotplug slot. Refused, `tap` is closed.
    pub(super) fn add_net(
        &mut self,
        id: String,
        mac: [u8; 6],
        mtu: Option<u16>,
        tap: OwnedFd,
    ) -> Result<(), String> {
        if !crate::config::valid_id(&id) {
            return Err(ID_RULE.into());
        }
        if self.hotplug.is_none() {
            return Err(
                "network card hotplug needs ACPI (ward-vmm was started with --no-acpi)".into(),
            );
        }
        let mut nets = 0;
        for s in &self.virtio {
            if let VirtioKind::Net {
                id: other, config, ..
            } = &s.kind
            {
                nets += 1;
                if other.as_deref() == Some(id.as_str()) {
                    return Err(format!("a network card with id {id:?} is already attached"));
                }
                if config.mac == mac {
                    return Err(format!(
                        "a network card with MAC address {} is already attached",
                        config.mac_string()
                    ));
                }
            }
        }
        if nets >= MAX_NETS {
            return Err(format!(
                "{nets} network cards are attached, at most {MAX_NETS}"
            ));
        }
        // The slot first: nothing is done to the tap when there is no room for it.
        let slot = self.free_slot()?;
        let kind = VirtioKind::hot_net(id.clone(), mac, mtu, tap).map_err(|e| e.to_string())?;
        let device = self.plug(slot, kind)?;
        info!(self.log, "network card attached"; "id" => id, "slot" => slot, "device" => device);
        Ok(())
    }

    pub(super) fn remove_net(&mut self, id: &str) -> Result<(), String> {
        if self.hotplug.is_none() {
            return Err(
                "network card hotplug needs ACPI (ward-vmm was started with --no-acpi)".into(),
            );
        }
        // Cards given on the command line have no id: only hot-added ones are found.
        let Some(pos) = self.virtio.iter().position(|s| s.net_id() == Some(id)) else {
            return Err(format!("no hot-added network card with id {id:?}"));
        };
        let slot = self.unplug(pos)?;
        info!(self.log, "network card removal requested"; "id" => id, "slot" => slot);
        Ok(())
    }

    /// The first hotplug slot that holds no device and is not being ejected: disks and
    /// network cards share the slots, and a slot serves one device at a time.
    fn free_slot(&self) -> Result<u32, String> {
        let Some(h) = &self.hotplug else {
            return Err("hotplug needs ACPI (ward-vmm was started with --no-acpi)".into());
        };
        let s = h.slots.lock().unwrap_or_else(|e| e.into_inner());
        (self.first_hotplug_slot..s.units.len() as u32)
            .find(|&n| !s.units[n as usize].present && !self.virtio.iter().any(|v| v.slot == n))
            .ok_or_else(|| format!("all {HOTPLUG_SLOTS} hotplug slots are in use"))
    }

    /// Builds `kind` into `slot` (from [`Vmm::free_slot`]) and tells the guest; the device's
    /// description, for the log.
    fn plug(&mut self, slot: u32, kind: VirtioKind) -> Result<String, String> {
        let Some(h) = &self.hotplug else {
            return Err("hotplug needs ACPI (ward-vmm was started with --no-acpi)".into());
        };
        let (slots, ged) = (h.slots.clone(), h.ged.clone());
        let dev = VirtioSlot::create(&self.vm, &self.mem, &self.mmio, slot, kind)
            .map_err(|e| e.to_string())?;
        let device = dev.describe();
        self.virtio.push(dev);
        slots.lock().unwrap_or_else(|e| e.into_inner()).units[slot as usize] = UnitState {
            present: true,
            inserting: true,
            removing: false,
        };
        ged.notify(ged::EVENT_SLOTS)
            .map_err(|e| format!("signalling the guest: {e}"))?;
        Ok(device)
    }

    /// Asks the guest to let go of the hot-added device at `pos` in `self.virtio`; it is
    /// taken down when the guest ejects its slot ([`Vmm::finish_slot_ejects`]).
    fn unplug(&mut self, pos: usize) -> Result<u32, String> {
        let Some(h) = &self.hotplug else {
            return Err("hotplug needs ACPI (ward-vmm was started with --no-acpi)".into());
        };
        let dev = &mut self.virtio[pos];
        dev.removing = true;
        let slot = dev.slot;
        h.slots.lock().unwrap_or_else(|e| e.into_inner()).units[slot as usize].removing = true;
        h.ged
            .notify(ged::EVENT_SLOTS)
            .map_err(|e| format!("signalling the guest: {e}"))?;
        Ok(slot)
    }

    /// The guest ejected slots (its driver let go of the device): take them down.
    pub(super) fn finish_slot_ejects(&mut self) {
        let Some(h) = &self.hotplug else {
            return;
        };
        let _ = h.slot_eject.read();
        let ejected: Vec<u32> = {
            let mut s = h.slots.lock().unwrap_or_else(|e| e.into_inner());
            let ids = std::mem::take(&mut s.ejected);
            for &n in &ids {
                s.units[n as usize] = UnitState::default();
            }
            ids
        };
        for slot in ejected {
            if let Some(pos) = self.virtio.iter().position(|s| s.slot == slot) {
                let dev = self.virtio.remove(pos);
                dev.detach(&self.vm, &self.mmio);
                info!(self.log, "device detached"; "slot" => slot, "device" => dev.describe());
                // Dropped here: a network card's worker stops and its tap is closed.
                drop(dev);
            }
        }
    }
}

/// Network cards and disks on the hotplug slots of a real (never started) VM, on this
/// thread under the main thread's seccomp filter as in [`Vmm::run`]: the guest's side (its
/// driver bringing the card up, its eject) is played through the MMIO bus. Needs /dev/kvm
/// and root (the taps live in a private network namespace).
#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::path::Path;
    use std::sync::mpsc;

    use crate::arch::x86_64::layout;
    use crate::config::{DeviceConfig, DiskConfig, NetConfig};
    use crate::devices::virtio::mmio::status::{
        ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, FEATURES_OK,
    };
    use crate::devices::virtio::net::tap::{IFF_NO_PI, IFF_TAP, IFF_VNET_HDR};
    use crate::devices::virtio::net::tests::{create_tun, in_private_netns};
    use crate::seccomp::ThreadClass;
    use crate::vmm::{Payload, Vmm, VmmConfig};

    fn kvm_available() -> bool {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
    }

    fn vm(dir: &Path, acpi: bool, nets: Vec<NetConfig>) -> Vmm {
        Vmm::new(
            VmmConfig {
                payload: Payload::Raw {
                    code: vec![0xfa, 0xf4],
                    addr: 0x1000,
                },
                vcpus: 1,
                max_vcpus: 1,
                memory_mib: 32,
                serial_log: dir.join(format!("serial-{acpi}.log")),
                api_socket: None,
                devices: DeviceConfig {
                    nets,
                    ..Default::default()
                },
                acpi,
                emulated_ring0: false,
            },
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .expect("building the VM")
    }

    fn tap() -> (OwnedFd, String) {
        let (file, name) = create_tun(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
        (OwnedFd::from(file), name)
    }

    /// What the guest's virtio-net driver does to bring the card at `base` up (virtio-mmio
    /// register offsets, virtio 1.2 4.2.2; the order of 3.1.1); the status it reads back.
    fn bring_up(mmio: &crate::bus::Bus, base: u64) -> u32 {
        let w = |offset: u64, value: u32| {
            assert!(
                mmio.write(base + offset, &value.to_le_bytes()),
                "{offset:#x}"
            );
        };
        // VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS.
        let features: u64 = 1 << 32 | 1 << 5 | 1 << 16;
        w(0x70, ACKNOWLEDGE);
        w(0x70, ACKNOWLEDGE | DRIVER);
        w(0x24, 0);
        w(0x20, features as u32);
        w(0x24, 1);
        w(0x20, (features >> 32) as u32);
        w(0x70, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        for (queue, ring) in [(0u32, 0x10_0000u32), (1, 0x20_0000)] {
            w(0x30, queue);
            w(0x38, 256);
            w(0x80, ring);
            w(0x84, 0);
            w(0x90, ring + 0x1000);
            w(0x94, 0);
            w(0xa0, ring + 0x2000);
            w(0xa4, 0);
            w(0x44, 1);
        }
        w(0x70, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        let mut status = [0u8; 4];
        assert!(mmio.read(base + 0x70, &mut status));
        u32::from_le_bytes(status)
    }

    /// The guest's eject of `slot` (the selector block's layout, devices/hotplug/cpu.rs).
    fn eject(vmm: &Vmm, slot: u32) {
        assert!(vmm
            .mmio
            .write(layout::SLOT_HOTPLUG_START, &slot.to_le_bytes()));
        assert!(vmm.mmio.write(layout::SLOT_HOTPLUG_START + 4, &[1 << 3]));
    }

    fn slot_of(vmm: &Vmm, id: &str) -> u32 {
        vmm.virtio
            .iter()
            .find(|s| s.net_id() == Some(id) || s.disk_id() == Some(id))
            .map(|s| s.slot)
            .unwrap_or_else(|| panic!("no device {id}"))
    }

    #[test]
    fn network_cards_come_and_go_on_hotplug_slots() {
        if !kvm_available() {
            eprintln!("skipped: no /dev/kvm");
            return;
        }
        in_private_netns(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let disk = dir.path().join("d1.img");
            std::fs::write(&disk, vec![0u8; 1 << 20]).expect("disk image");
            // The taps: made here, where TUNSETIFF is still allowed.
            let (boot_tap, _) = tap();
            let taps: Vec<(OwnedFd, String)> = (0..6).map(|_| tap()).collect();
            let mut fds = [0; 2];
            // SAFETY: pipe2 writes two new descriptors into the array.
            assert_eq!(
                unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) },
                0
            );
            // SAFETY: new descriptors that nothing else owns.
            let (pipe_r, pipe_w) =
                unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

            // This thread asks, the test's answers whether an interface still exists: a
            // tap's goes when its last descriptor is closed.
            let (ask, questions) = mpsc::channel::<String>();
            let (tell, answers) = mpsc::channel::<bool>();
            let boot_fd = boot_tap.as_raw_fd();
            // The directory stays with this thread: removing it is no call of the VMM's.
            let dir_path = dir.path().to_path_buf();
            let scenario = std::thread::spawn(move || {
                let exists = |name: &str| {
                    ask.send(name.to_string()).expect("asking");
                    answers.recv().expect("an answer")
                };
                let boot_net = NetConfig {
                    fd: boot_fd,
                    mac: [2, 0, 0, 0, 0, 0x10],
                    mtu: None,
                };
                let mut vmm = vm(&dir_path, true, vec![boot_net]);
                let mut plain = vm(&dir_path, false, Vec::new());
                let program = ThreadClass::Vmm.program().expect("the VMM filter");
                seccompiler::apply_filter(&program).expect("installing the filter");

                let mut taps = taps.into_iter();
                let mut next = || taps.next().expect("a tap");
                let mac = |n| [2, 0, 0, 0, 0, n];

                let (t, name) = next();
                let e = plain.add_net("n0".into(), mac(1), None, t).unwrap_err();
                assert!(e.contains("needs ACPI"), "{e}");
                assert!(!exists(&name), "a refused tap is closed");

                vmm.add_disk(DiskConfig {
                    id: "d1".into(),
                    path: disk,
                    readonly: false,
                })
                .expect("add_disk");
                let (t1, name1) = next();
                vmm.add_net("n1".into(), mac(1), Some(1400), t1)
                    .expect("add_net");
                assert!(exists(&name1));
                let (disk_slot, net_slot) = (slot_of(&vmm, "d1"), slot_of(&vmm, "n1"));
                assert_ne!(disk_slot, net_slot, "a disk and a card share no slot");
                assert!(disk_slot >= vmm.first_hotplug_slot && net_slot >= vmm.first_hotplug_slot);
                {
                    let h = vmm.hotplug.as_ref().expect("ACPI");
                    let s = h.slots.lock().expect("slots");
                    assert!(
                        s.units[net_slot as usize].present && s.units[net_slot as usize].inserting
                    );
                }
                let info = vmm.info();
                let nets = info["nets"].as_array().expect("nets").clone();
                assert_eq!(nets.len(), 2, "{info}");
                assert_eq!(nets[0]["id"], serde_json::Value::Null, "the --net card");
                assert_eq!(nets[1]["id"], "n1");
                assert_eq!(nets[1]["mac"], "02:00:00:00:00:01");
                assert_eq!(nets[1]["mtu"], 1400);
                assert_eq!(nets[1]["tap"], name1.as_str());
                assert_eq!(nets[1]["state"], "attached");

                // Refusals close what they were given.
                let (t, name) = next();
                let e = vmm.add_net("n1".into(), mac(2), None, t).unwrap_err();
                assert!(e.contains("already attached"), "{e}");
                assert!(!exists(&name));
                let (t, name) = next();
                let e = vmm.add_net("n9".into(), mac(1), None, t).unwrap_err();
                assert!(e.contains("MAC address 02:00:00:00:00:01"), "{e}");
                assert!(!exists(&name));
                let (t, name) = next();
                let e = vmm.add_net("bad id".into(), mac(3), None, t).unwrap_err();
                assert!(e.contains("id must be"), "{e}");
                assert!(!exists(&name));
                let e = vmm.add_net("p1".into(), mac(4), None, pipe_w).unwrap_err();
                assert!(e.contains("is not a tap (TUNGETIFF)"), "{e}");
                let mut b = [0u8; 1];
                assert_eq!(
                    std::io::Read::read(&mut &pipe_r, &mut b).expect("end of file"),
                    0,
                    "the pipe's write end was closed"
                );

                // The guest's driver takes the card (from a vCPU, whose filter is stacked
                // on this one): its worker starts.
                let (base, _) = layout::virtio_slot(net_slot).expect("slot");
                let mmio = vmm.mmio.clone();
                let status = std::thread::spawn(move || {
                    let vcpu = ThreadClass::Vcpu.program().expect("the vCPU filter");
                    seccompiler::apply_filter(&vcpu).expect("installing the filter");
                    bring_up(&mmio, base)
                })
                .join()
                .expect("the driver's thread");
                assert_eq!(status & DEVICE_NEEDS_RESET, 0, "status {status:#x}");
                assert_ne!(status & DRIVER_OK, 0, "status {status:#x}");

                let e = vmm.remove_net("zz").unwrap_err();
                assert!(e.contains("no hot-added network card"), "{e}");
                assert!(vmm.remove_disk("n1").is_err(), "ids are per kind");
                vmm.remove_net("n1").expect("remove_net");
                assert_eq!(vmm.info()["nets"][1]["state"], "removing");
                {
                    let h = vmm.hotplug.as_ref().expect("ACPI");
                    let s = h.slots.lock().expect("slots");
                    assert!(s.units[net_slot as usize].removing);
                }
                assert!(exists(&name1), "kept until the guest ejects it");
                eject(&vmm, net_slot);
                vmm.finish_slot_ejects();
                let nets = vmm.info()["nets"].as_array().expect("nets").clone();
                assert_eq!(nets.len(), 1, "only the --net card is left: {nets:?}");
                assert!(!exists(&name1), "the worker stopped and the tap was closed");
                assert_eq!(slot_of(&vmm, "d1"), disk_slot);

                // The slot is free again; the disk keeps its own.
                let (t, name) = next();
                vmm.add_net("n1".into(), mac(1), None, t)
                    .expect("add_net again");
                assert_eq!(slot_of(&vmm, "n1"), net_slot);
                assert!(exists(&name));
                drop(vmm);
                assert!(!exists(&name), "closed with the VM");
            });
            for name in questions {
                let c = std::ffi::CString::new(name).expect("a name");
                // SAFETY: a NUL-terminated string that lives across the call.
                let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
                tell.send(index != 0).expect("telling");
            }
            scenario
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            drop(boot_tap);
        });
    }
}
