//! Resizing a running q35 VM through QMP: disks on the PCIe root ports declared at boot,
//! vCPUs through ACPI CPU hotplug, memory as pc-dimm DIMMs.
//!
//! Nothing is remembered between calls: what the VM has is read back from QEMU each time
//! (`query-pci`, `query-hotpluggable-cpus`, `query-memory-devices`), so any later `ward`
//! process can resize a VM that an earlier one launched. Removals need the guest's
//! consent (it must let go of the device); they are polled for until QEMU has dropped the
//! device, within a bound.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::cmdline::DISK_PORT_PREFIX;
use super::qmp::QmpClient;
use crate::{DiskSpec, Error, Nic, Result, VmInstance};

/// How long one QMP command may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the guest gets to let go of a device being removed.
const UNPLUG_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the guest gets to empty a DIMM: a container's delete must not wait on memory
/// the guest cannot migrate away; such a DIMM stays (the VM keeps the memory).
const DIMM_UNPLUG_TIMEOUT: Duration = Duration::from_secs(5);
/// Linux onlines memory in blocks of this size on x86-64; a DIMM is a whole number of them.
const MEMORY_BLOCK_MIB: u32 = 128;
const MIB: u64 = 1024 * 1024;

fn connect(vm: &VmInstance) -> Result<QmpClient> {
    QmpClient::connect(&vm.control_socket, QMP_TIMEOUT)
}

fn disk_device(id: &str) -> String {
    format!("disk-{id}")
}

fn disk_node(id: &str) -> String {
    format!("blk-{id}")
}

/// The same rule as ward-vmm's: the ID becomes a QEMU ID and the guest's serial.
fn check_disk_id(id: &str) -> Result<()> {
    let valid = (1..=20).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "disk ID {id:?} must be 1 to 20 of [A-Za-z0-9_.-]"
        )))
    }
}

/// The root ports (`hpN`) with nothing plugged in, from a `query-pci` answer.
fn free_disk_ports(query_pci: &Value) -> Vec<String> {
    let mut free = Vec::new();
    for bus in query_pci.as_array().into_iter().flatten() {
        for device in bus["devices"].as_array().into_iter().flatten() {
            let Some(id) = device["qdev_id"].as_str() else {
                continue;
            };
            if !id.starts_with(DISK_PORT_PREFIX) {
                continue;
            }
            let empty = device["pci_bridge"]["devices"]
                .as_array()
                .is_none_or(|d| d.is_empty());
            if empty {
                free.push(id.to_string());
            }
        }
    }
    free
}

/// Whether `/machine/peripheral/<id>` still exists.
fn device_exists(qmp: &mut QmpClient, id: &str) -> Result<bool> {
    let list = qmp.execute("qom-list", Some(json!({"path": "/machine/peripheral"})))?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["name"].as_str() == Some(id)))
}

/// Asks the guest to release device `id` and waits until QEMU has removed it.
fn unplug(qmp: &mut QmpClient, id: &str, what: &str) -> Result<()> {
    unplug_within(qmp, id, what, UNPLUG_TIMEOUT)
}

fn unplug_within(qmp: &mut QmpClient, id: &str, what: &str, timeout: Duration) -> Result<()> {
    qmp.execute("device_del", Some(json!({ "id": id })))?;
    let deadline = Instant::now() + timeout;
    while device_exists(qmp, id)? {
        if Instant::now() >= deadline {
            return Err(Error::Qmp(format!(
                "the guest did not release {what} within {} s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub fn add_disk(vm: &VmInstance, disk: &DiskSpec) -> Result<()> {
    check_disk_id(&disk.id)?;
    let path = std::path::absolute(&disk.path)
        .map_err(|e| Error::io(format!("resolving {}", disk.path.display()), e))?;
    let meta =
        std::fs::metadata(&path).map_err(|e| Error::io(format!("disk {}", path.display()), e))?;
    use std::os::unix::fs::FileTypeExt;
    let driver = if meta.file_type().is_block_device() {
        "host_device"
    } else if meta.is_file() {
        "file"
    } else {
        return Err(Error::Config(format!(
            "disk {} is neither a block device nor a regular file",
            path.display()
        )));
    };
    let mut qmp = connect(vm)?;
    let port = free_disk_ports(&qmp.execute("query-pci", None)?)
        .into_iter()
        .next()
        .ok_or_else(|| {
            Error::Config(format!(
                "no free disk slot left in the VM (each of its {DISK_PORT_PREFIX}N root ports holds a disk)"
            ))
        })?;
    qmp.execute(
        "blockdev-add",
        Some(json!({
            "driver": "raw",
            "node-name": disk_node(&disk.id),
            "read-only": disk.read_only,
            "file": {"driver": driver, "filename": path_str(&path)?},
        })),
    )?;
    let added = qmp.execute(
        "device_add",
        Some(json!({
            "driver": "virtio-blk-pci",
            "id": disk_device(&disk.id),
            "drive": disk_node(&disk.id),
            "bus": port,
            "serial": disk.id,
        })),
    );
    if let Err(e) = added {
        let _ = qmp.execute(
            "blockdev-del",
            Some(json!({"node-name": disk_node(&disk.id)})),
        );
        return Err(e);
    }
    Ok(())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| Error::Config(format!("disk path {} is not UTF-8", path.display())))
}

pub fn remove_disk(vm: &VmInstance, id: &str) -> Result<()> {
    check_disk_id(id)?;
    let mut qmp = connect(vm)?;
    unplug(&mut qmp, &disk_device(id), &format!("disk {id}"))?;
    qmp.execute("blockdev-del", Some(json!({"node-name": disk_node(id)})))?;
    Ok(())
}

fn nic_device(id: &str) -> String {
    format!("nic-{id}")
}

fn nic_netdev(id: &str) -> String {
    format!("hpnet-{id}")
}

/// Plugs a virtio-net card into a free root port, its frames going through the tap
/// handed over with `getfd` (QEMU may not open taps itself: it runs with no capability
/// to, and in the host's network namespace, not the pod's).
pub fn add_nic(vm: &VmInstance, id: &str, nic: &Nic) -> Result<()> {
    check_disk_id(id).map_err(|_| {
        Error::Config(format!(
            "network card ID {id:?} must be 1 to 20 of [A-Za-z0-9_.-]"
        ))
    })?;
    let mut qmp = connect(vm)?;
    let port = free_disk_ports(&qmp.execute("query-pci", None)?)
        .into_iter()
        .next()
        .ok_or_else(|| {
            Error::Config(format!(
                "no free slot left in the VM for a network card (each of its {DISK_PORT_PREFIX}N root ports holds a device)"
            ))
        })?;
    let netdev = nic_netdev(id);
    qmp.execute_with_fd("getfd", Some(json!({ "fdname": netdev })), nic.tap.as_fd())?;
    let added = qmp.execute(
        "netdev_add",
        Some(json!({"type": "tap", "id": netdev, "fd": netdev, "vhost": false})),
    );
    if let Err(e) = added {
        let _ = qmp.execute("closefd", Some(json!({ "fdname": netdev })));
        return Err(e);
    }
    let added = qmp.execute(
        "device_add",
        Some(json!({
            "driver": "virtio-net-pci",
            "id": nic_device(id),
            "netdev": netdev,
            "mac": nic.mac_text(),
            "host_mtu": nic.mtu,
            "bus": port,
        })),
    );
    if let Err(e) = added {
        let _ = qmp.execute("netdev_del", Some(json!({ "id": netdev })));
        return Err(e);
    }
    Ok(())
}

/// Unplugs the card (the guest lets go of it) and closes QEMU's copy of its tap.
pub fn remove_nic(vm: &VmInstance, id: &str) -> Result<()> {
    let mut qmp = connect(vm)?;
    let device = nic_device(id);
    if device_exists(&mut qmp, &device)? {
        unplug(&mut qmp, &device, &format!("network card {id}"))?;
    }
    match qmp.execute("netdev_del", Some(json!({ "id": nic_netdev(id) }))) {
        Ok(_) => Ok(()),
        // Already gone: a removal that an earlier, interrupted one began.
        Err(Error::Qmp(msg)) if msg.contains("DeviceNotFound") || msg.contains("not found") => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// One CPU slot of `query-hotpluggable-cpus`.
#[derive(Debug, Clone, PartialEq)]
struct CpuSlot {
    driver: String,
    props: Value,
    /// Where it is plugged, if it is.
    qom_path: Option<String>,
}

impl CpuSlot {
    /// Socket, core and thread: the order slots fill in.
    fn position(&self) -> (u64, u64, u64) {
        let get = |k: &str| self.props[k].as_u64().unwrap_or(0);
        (get("socket-id"), get("core-id"), get("thread-id"))
    }

    fn device_id(&self) -> String {
        let (s, c, t) = self.position();
        format!("vcpu-s{s}-c{c}-t{t}")
    }
}

fn cpu_slots(answer: &Value) -> Result<Vec<CpuSlot>> {
    let mut slots = Vec::new();
    for slot in answer.as_array().into_iter().flatten() {
        let driver = slot["type"]
            .as_str()
            .ok_or_else(|| Error::Qmp(format!("query-hotpluggable-cpus: no type in {slot}")))?;
        slots.push(CpuSlot {
            driver: driver.to_string(),
            props: slot["props"].clone(),
            qom_path: slot["qom-path"].as_str().map(str::to_string),
        });
    }
    slots.sort_by_key(CpuSlot::position);
    Ok(slots)
}

pub fn set_vcpus(vm: &VmInstance, count: u32) -> Result<()> {
    let mut qmp = connect(vm)?;
    let slots = cpu_slots(&qmp.execute("query-hotpluggable-cpus", None)?)?;
    let max = slots.len();
    let count = count as usize;
    if count == 0 || count > max {
        return Err(Error::Config(format!(
            "the VM can have 1 to {max} vCPUs, not {count}"
        )));
    }
    let plugged: Vec<&CpuSlot> = slots.iter().filter(|s| s.qom_path.is_some()).collect();
    if count > plugged.len() {
        let empty = slots.iter().filter(|s| s.qom_path.is_none());
        for slot in empty.take(count - plugged.len()) {
            let mut args = json!({"driver": slot.driver, "id": slot.device_id()});
            if let (Some(args), Some(props)) = (args.as_object_mut(), slot.props.as_object()) {
                for (k, v) in props {
                    args.insert(k.clone(), v.clone());
                }
            }
            qmp.execute("device_add", Some(args))?;
        }
    } else {
        // Only the ones we added have device IDs (the boot CPUs stay), last first.
        let removable = plugged
            .iter()
            .rev()
            .filter(|s| {
                s.qom_path
                    .as_deref()
                    .is_some_and(|p| p.starts_with("/machine/peripheral/"))
            })
            .take(plugged.len() - count);
        for slot in removable {
            unplug(&mut qmp, &slot.device_id(), "a vCPU")?;
        }
    }
    Ok(())
}

/// The VM's memory now, MiB.
fn memory_mib(qmp: &mut QmpClient) -> Result<u32> {
    let summary = qmp.execute("query-memory-size-summary", None)?;
    let bytes = summary["base-memory"].as_u64().unwrap_or(0)
        + summary["plugged-memory"].as_u64().unwrap_or(0);
    Ok(u32::try_from(bytes / MIB).unwrap_or(u32::MAX))
}

/// The DIMMs (ID, MiB) hot-added so far, in the order they were added.
fn dimms(qmp: &mut QmpClient) -> Result<Vec<(String, u32)>> {
    let devices = qmp.execute("query-memory-devices", None)?;
    let mut found: Vec<(String, u32)> = devices
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let data = &d["data"];
            let id = data["id"].as_str()?.to_string();
            let size = data["size"].as_u64()? / MIB;
            Some((id, u32::try_from(size).unwrap_or(u32::MAX)))
        })
        .collect();
    found.sort_by_key(|(id, _)| {
        id.trim_start_matches("dimm")
            .parse::<u32>()
            .unwrap_or(u32::MAX)
    });
    Ok(found)
}

pub fn set_memory(vm: &VmInstance, mib: u32) -> Result<u32> {
    let mut qmp = connect(vm)?;
    let current = memory_mib(&mut qmp)?;
    let dimms = dimms(&mut qmp)?;
    if mib > current {
        let add = (mib - current).div_ceil(MEMORY_BLOCK_MIB) * MEMORY_BLOCK_MIB;
        let n = dimms
            .iter()
            .filter_map(|(id, _)| id.trim_start_matches("dimm").parse::<u32>().ok())
            .max()
            .map_or(0, |n| n + 1);
        let backend = format!("mem-dimm{n}");
        qmp.execute(
            "object-add",
            Some(json!({
                "qom-type": "memory-backend-memfd",
                "id": backend,
                "size": u64::from(add) * MIB,
                // vhost-user devices map guest memory: it must be shared, like the rest.
                "share": true,
            })),
        )?;
        let added = qmp.execute(
            "device_add",
            Some(json!({"driver": "pc-dimm", "id": format!("dimm{n}"), "memdev": backend})),
        );
        if let Err(e) = added {
            let _ = qmp.execute("object-del", Some(json!({ "id": backend })));
            return Err(e);
        }
    } else {
        // Whole DIMMs only, newest first, while what remains still covers `mib`; a DIMM
        // the guest cannot empty (kernel memory landed in it) stays.
        let mut total = current;
        for (id, size) in dimms.iter().rev() {
            if total.saturating_sub(*size) < mib {
                break;
            }
            if unplug_within(&mut qmp, id, "a memory DIMM", DIMM_UNPLUG_TIMEOUT).is_err() {
                break;
            }
            let _ = qmp.execute("object-del", Some(json!({"id": format!("mem-{id}")})));
            total -= size;
        }
    }
    memory_mib(&mut qmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_the_empty_hotplug_root_ports() {
        let answer = json!([{"bus": 0, "devices": [
            {"qdev_id": "", "class_info": {"desc": "Host bridge"}},
            {"qdev_id": "hp0", "pci_bridge": {"bus": {"number": 1}, "devices": [
                {"qdev_id": "disk-a"}]}},
            {"qdev_id": "hp1", "pci_bridge": {"bus": {"number": 2}, "devices": []}},
            {"qdev_id": "hp2", "pci_bridge": {"bus": {"number": 3}}},
            {"qdev_id": "other", "pci_bridge": {"bus": {"number": 4}, "devices": []}},
        ]}]);
        assert_eq!(free_disk_ports(&answer), ["hp1", "hp2"]);
    }

    #[test]
    fn cpu_slots_sort_by_position_and_name_their_devices() {
        let answer = json!([
            {"type": "max-x86_64-cpu", "vcpus-count": 1,
             "props": {"socket-id": 2, "core-id": 0, "thread-id": 0}},
            {"type": "max-x86_64-cpu", "vcpus-count": 1,
             "props": {"socket-id": 0, "core-id": 0, "thread-id": 0},
             "qom-path": "/machine/unattached/device[0]"},
            {"type": "max-x86_64-cpu", "vcpus-count": 1,
             "props": {"socket-id": 1, "core-id": 0, "thread-id": 0},
             "qom-path": "/machine/peripheral/vcpu-s1-c0-t0"},
        ]);
        let slots = cpu_slots(&answer).unwrap();
        let ids: Vec<String> = slots.iter().map(CpuSlot::device_id).collect();
        assert_eq!(ids, ["vcpu-s0-c0-t0", "vcpu-s1-c0-t0", "vcpu-s2-c0-t0"]);
        assert!(slots[0].qom_path.is_some() && slots[2].qom_path.is_none());
        assert!(cpu_slots(&json!([{"props": {}}])).is_err());
    }

    #[test]
    fn disk_ids_follow_ward_vmms_rule() {
        assert!(check_disk_id("rootfs-c1").is_ok());
        for bad in ["", "a b", "x".repeat(21).as_str(), "a,b", "../x"] {
            assert!(check_disk_id(bad).is_err(), "{bad:?}");
        }
    }
}
