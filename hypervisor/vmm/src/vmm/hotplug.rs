//! Growing and shrinking the running VM: vCPUs and disks come and go in two steps, the
//! VMM announcing the change through the GED and the guest acting on it (for removal,
//! ejecting the CPU or slot, which the main loop then finishes).

use slog::{info, warn};

use super::virtio::{VirtioKind, VirtioSlot};
use super::{Vmm, HOTPLUG_SLOTS};
use crate::config::DiskConfig;
use crate::devices::hotplug::cpu::UnitState;
use crate::devices::hotplug::ged;

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
            return Err("id must be 1 to 20 of [A-Za-z0-9_.-]".into());
        }
        if self
            .virtio
            .iter()
            .any(|s| s.disk_id() == Some(disk.id.as_str()))
        {
            return Err(format!("a disk with id {:?} is already attached", disk.id));
        }
        let Some(h) = &self.hotplug else {
            return Err("disk hotplug needs ACPI (ward-vmm was started with --no-acpi)".into());
        };
        let slots = h.slots.clone();
        let ged = h.ged.clone();
        let slot = {
            let s = slots.lock().unwrap_or_else(|e| e.into_inner());
            (self.first_hotplug_slot..s.units.len() as u32)
                .find(|&n| !s.units[n as usize].present && !self.virtio.iter().any(|v| v.slot == n))
        };
        let Some(slot) = slot else {
            return Err(format!("all {HOTPLUG_SLOTS} hotplug slots are in use"));
        };
        let id = disk.id.clone();
        let dev = VirtioSlot::create(
            &self.vm,
            &self.mem,
            &self.mmio,
            slot,
            VirtioKind::Block(disk),
        )
        .map_err(|e| e.to_string())?;
        self.virtio.push(dev);
        slots.lock().unwrap_or_else(|e| e.into_inner()).units[slot as usize] = UnitState {
            present: true,
            inserting: true,
            removing: false,
        };
        ged.notify(ged::EVENT_SLOTS)
            .map_err(|e| format!("signalling the guest: {e}"))?;
        info!(self.log, "disk attached"; "id" => id, "slot" => slot);
        Ok(())
    }

    pub(super) fn remove_disk(&mut self, id: &str) -> Result<(), String> {
        let Some(h) = &self.hotplug else {
            return Err("disk hotplug needs ACPI (ward-vmm was started with --no-acpi)".into());
        };
        let Some(dev) = self.virtio.iter_mut().find(|s| s.disk_id() == Some(id)) else {
            return Err(format!("no disk with id {id:?}"));
        };
        if dev.slot < self.first_hotplug_slot {
            return Err(format!(
                "disk {id:?} was given on the command line; only hot-added disks can be removed"
            ));
        }
        dev.removing = true;
        let slot = dev.slot;
        h.slots.lock().unwrap_or_else(|e| e.into_inner()).units[slot as usize].removing = true;
        h.ged
            .notify(ged::EVENT_SLOTS)
            .map_err(|e| format!("signalling the guest: {e}"))?;
        info!(self.log, "disk removal requested"; "id" => id, "slot" => slot);
        Ok(())
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
                info!(self.log, "disk detached"; "slot" => slot, "device" => dev.describe());
            }
        }
    }
}
