//! The DSDT: AML for the devices the guest cannot discover by itself.

use acpi_tables::aml::{
    self, Acquire, And, BufferData, Device, EISAName, Equal, Field, FieldAccessType, FieldEntry,
    FieldLockRule, FieldUpdateRule, If, Interrupt, Local, Memory32Fixed, Method, MethodCall, Mutex,
    Name, Notify, OpRegion, OpRegionSpace, Package, Path, Release, ResourceTemplate, Return, Scope,
    Store, IO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::arch::x86_64::layout;
use crate::devices::hotplug::{cpu, ged, slots};

/// A virtio-mmio device present at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioAcpiDevice {
    pub base: u64,
    pub irq: u32,
}

pub struct DsdtConfig {
    /// CPUs enabled in the MADT; the others are hotpluggable (presence comes from the
    /// CPU hotplug registers at run time).
    pub boot_vcpus: u32,
    pub max_vcpus: u32,
    pub virtio: Vec<VirtioAcpiDevice>,
    /// virtio-mmio slots that can be filled while the guest runs (after the boot ones).
    pub hotplug_slots: u32,
}

fn aml_bytes(items: &[&dyn Aml]) -> Vec<u8> {
    let mut v = Vec::new();
    for i in items {
        i.to_aml_bytes(&mut v);
    }
    v
}

pub fn build(cfg: &DsdtConfig) -> Vec<u8> {
    let mut sb_children: Vec<Vec<u8>> = vec![com1()];
    for (n, dev) in cfg.virtio.iter().enumerate() {
        sb_children.push(virtio_device(&format!("VR{n:02X}"), n as u32, *dev));
    }
    sb_children.push(ged_device());
    sb_children.push(cpus(cfg.max_vcpus));
    sb_children.push(slot_container(cfg.virtio.len() as u32, cfg.hotplug_slots));
    let sb_body: Vec<u8> = sb_children.concat();
    let sb = Raw::of(&Scope::new(Path::new("\\_SB_"), vec![&RawAml(&sb_body)]));
    // S5 (soft off) is sleep type 5: what the guest writes to the sleep control register.
    let s5 = Raw::of(&Name::new(
        Path::new("_S5_"),
        &Package::new(vec![&5u8, &0u8, &0u8, &0u8]),
    ));
    let body = aml_bytes(&[&sb, &s5]);
    let mut sdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    sdt.append_slice(&body);
    sdt.as_slice().to_vec()
}

/// Already-encoded AML, owned: lets objects built from borrowed temporaries be kept.
struct Raw(Vec<u8>);

impl Raw {
    fn of(item: &dyn Aml) -> Self {
        Raw(aml_bytes(&[item]))
    }
}

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

/// Already-encoded AML spliced into a parent object.
struct RawAml<'a>(&'a [u8]);

impl Aml for RawAml<'_> {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(self.0);
    }
}

fn com1() -> Vec<u8> {
    let crs = Raw::of(&ResourceTemplate::new(vec![
        &IO::new(
            layout::SERIAL_PORT_BASE,
            layout::SERIAL_PORT_BASE,
            1,
            layout::SERIAL_PORT_SIZE as u8,
        ),
        &Interrupt::new(true, true, false, false, layout::IRQ_SERIAL),
    ]));
    aml_bytes(&[&Device::new(
        Path::new("COM1"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0501")),
            &Name::new(Path::new("_UID"), &0u8),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    )])
}

fn virtio_device(name: &str, uid: u32, dev: VirtioAcpiDevice) -> Vec<u8> {
    let crs = Raw::of(&ResourceTemplate::new(vec![
        &Memory32Fixed::new(
            true,
            dev.base as u32,
            crate::devices::virtio::MMIO_WINDOW as u32,
        ),
        &Interrupt::new(true, true, false, false, dev.irq),
    ]));
    aml_bytes(&[&Device::new(
        Path::new(name),
        vec![
            &Name::new(Path::new("_HID"), &"LNRO0005"),
            &Name::new(Path::new("_UID"), &uid),
            &Name::new(Path::new("_CCA"), &aml::ONE),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    )])
}

/// The Generic Event Device: its interrupt runs `_EVT`, which reads (and clears) the
/// pending event bits and dispatches them.
fn ged_device() -> Vec<u8> {
    let crs = Raw::of(&ResourceTemplate::new(vec![&Interrupt::new(
        true,
        true,
        false,
        false,
        layout::IRQ_GED,
    )]));
    let region = Raw::of(&OpRegion::new(
        Path::new("GDST"),
        OpRegionSpace::SystemMemory,
        &(layout::GED_START + ged::EVENT),
        &4u8,
    ));
    let field = Raw::of(&Field::new(
        Path::new("GDST"),
        FieldAccessType::DWord,
        FieldLockRule::NoLock,
        FieldUpdateRule::WriteAsZeroes,
        vec![FieldEntry::Named(*b"GDAT", 32)],
    ));
    let mut dispatch: Vec<Vec<u8>> = Vec::new();
    for (bit, action) in [
        (
            ged::EVENT_CPU,
            aml_bytes(&[&MethodCall::new(Path::new("\\_SB_.CPUS.CSCN"), vec![])]),
        ),
        (
            ged::EVENT_SLOTS,
            aml_bytes(&[&MethodCall::new(Path::new("\\_SB_.HPSL.SSCN"), vec![])]),
        ),
        // Linux answers a Notify(\_SB, 0x81) with an orderly power-off.
        (
            ged::EVENT_SHUTDOWN,
            aml_bytes(&[&Notify::new(&Path::new("\\_SB_"), &0x81u8)]),
        ),
    ] {
        dispatch.push(aml_bytes(&[
            &And::new(&Local(1), &Local(0), &bit),
            &If::new(&Equal::new(&Local(1), &bit), vec![&RawAml(&action)]),
        ]));
    }
    let body = dispatch.concat();
    let evt = Raw::of(&Method::new(
        Path::new("_EVT"),
        1,
        true,
        vec![&Store::new(&Local(0), &Path::new("GDAT")), &RawAml(&body)],
    ));
    aml_bytes(&[&Device::new(
        Path::new("GED0"),
        vec![
            &Name::new(Path::new("_HID"), &"ACPI0013"),
            &Name::new(Path::new("_UID"), &0u8),
            &Name::new(Path::new("_CRS"), &crs),
            &region,
            &field,
            &evt,
        ],
    )])
}

/// The CPU container: one ACPI0007 device per possible vCPU, their presence read from
/// the CPU hotplug registers one selected CPU at a time.
fn cpus(max: u32) -> Vec<u8> {
    let region = Raw::of(&OpRegion::new(
        Path::new("PRST"),
        OpRegionSpace::SystemMemory,
        &layout::CPU_HOTPLUG_START,
        &(cpu::REGISTER_BYTES as u8),
    ));
    let sel_field = Raw::of(&Field::new(
        Path::new("PRST"),
        FieldAccessType::DWord,
        FieldLockRule::NoLock,
        FieldUpdateRule::WriteAsZeroes,
        vec![FieldEntry::Named(*b"CSEL", 32)],
    ));
    let flag_field = Raw::of(&Field::new(
        Path::new("PRST"),
        FieldAccessType::Byte,
        FieldLockRule::NoLock,
        FieldUpdateRule::WriteAsZeroes,
        vec![
            FieldEntry::Reserved(32),
            FieldEntry::Named(*b"CPEN", 1),
            FieldEntry::Named(*b"CINS", 1),
            FieldEntry::Named(*b"CRMV", 1),
            FieldEntry::Named(*b"CEJF", 1),
            FieldEntry::Reserved(4),
        ],
    ));
    let lock = Raw::of(&Mutex::new(Path::new("CLCK"), 0));
    let csta = Raw::of(&Method::new(
        Path::new("CSTA"),
        1,
        true,
        vec![
            &Acquire::new(Path::new("CLCK"), 0xffff),
            &Store::new(&Path::new("CSEL"), &aml::Arg(0)),
            &Store::new(&Local(0), &aml::ZERO),
            &If::new(
                &Equal::new(&Path::new("CPEN"), &aml::ONE),
                vec![&Store::new(&Local(0), &0xfu8)],
            ),
            &Release::new(Path::new("CLCK")),
            &Return::new(&Local(0)),
        ],
    ));
    let cej0 = Raw::of(&Method::new(
        Path::new("CEJ0"),
        1,
        true,
        vec![
            &Acquire::new(Path::new("CLCK"), 0xffff),
            &Store::new(&Path::new("CSEL"), &aml::Arg(0)),
            &Store::new(&Path::new("CEJF"), &aml::ONE),
            &Release::new(Path::new("CLCK")),
        ],
    ));
    // Device Check (1) for a CPU being added, Eject Request (3) for one being removed;
    // writing the flag back acknowledges it.
    let mut scan: Vec<Vec<u8>> = Vec::new();
    for id in 0..max {
        let dev = Path::new(&cpu_name(id));
        scan.push(aml_bytes(&[
            &Store::new(&Path::new("CSEL"), &id),
            &If::new(
                &Equal::new(&Path::new("CINS"), &aml::ONE),
                vec![
                    &Notify::new(&dev, &1u8),
                    &Store::new(&Path::new("CINS"), &aml::ONE),
                ],
            ),
            &If::new(
                &Equal::new(&Path::new("CRMV"), &aml::ONE),
                vec![
                    &Notify::new(&dev, &3u8),
                    &Store::new(&Path::new("CRMV"), &aml::ONE),
                ],
            ),
        ]));
    }
    let scan_body = scan.concat();
    let cscn = Raw::of(&Method::new(
        Path::new("CSCN"),
        0,
        true,
        vec![
            &Acquire::new(Path::new("CLCK"), 0xffff),
            &RawAml(&scan_body),
            &Release::new(Path::new("CLCK")),
        ],
    ));
    let mut cpu_devs: Vec<Vec<u8>> = Vec::new();
    for id in 0..max {
        cpu_devs.push(cpu_device(id));
    }
    let devs = cpu_devs.concat();
    aml_bytes(&[&Device::new(
        Path::new("CPUS"),
        vec![
            &Name::new(Path::new("_HID"), &"ACPI0010"),
            &Name::new(Path::new("_CID"), &EISAName::new("PNP0A05")),
            &region,
            &sel_field,
            &flag_field,
            &lock,
            &csta,
            &cej0,
            &cscn,
            &RawAml(&devs),
        ],
    )])
}

fn cpu_name(id: u32) -> String {
    format!("C{id:03X}")
}

fn cpu_device(id: u32) -> Vec<u8> {
    // _MAT: this CPU's MADT Local APIC entry, enabled.
    let mat = Raw::of(&BufferData::new(vec![0, 8, id as u8, id as u8, 1, 0, 0, 0]));
    let sta = Raw::of(&Method::new(
        Path::new("_STA"),
        0,
        false,
        vec![&Return::new(&MethodCall::new(Path::new("CSTA"), vec![&id]))],
    ));
    let ej0 = Raw::of(&Method::new(
        Path::new("_EJ0"),
        1,
        false,
        vec![&MethodCall::new(Path::new("CEJ0"), vec![&id])],
    ));
    aml_bytes(&[&Device::new(
        Path::new(&cpu_name(id)),
        vec![
            &Name::new(Path::new("_HID"), &"ACPI0007"),
            &Name::new(Path::new("_UID"), &id),
            &Name::new(Path::new("_MAT"), &mat),
            &sta,
            &ej0,
        ],
    )])
}

/// Hotpluggable virtio-mmio slots: each an ACPI container (ACPI0004, which Linux's
/// container scan handler makes hotplug-capable) holding one LNRO0005 device. The
/// container HPSL itself is always present; a Bus Check on it makes Linux rescan the
/// slots and enumerate a newly present one, an Eject Request on a slot removes it.
fn slot_container(first_slot: u32, count: u32) -> Vec<u8> {
    let region = Raw::of(&OpRegion::new(
        Path::new("SLRG"),
        OpRegionSpace::SystemMemory,
        &layout::SLOT_HOTPLUG_START,
        &(slots::REGISTER_BYTES as u8),
    ));
    let sel_field = Raw::of(&Field::new(
        Path::new("SLRG"),
        FieldAccessType::DWord,
        FieldLockRule::NoLock,
        FieldUpdateRule::WriteAsZeroes,
        vec![FieldEntry::Named(*b"SSEL", 32)],
    ));
    let flag_field = Raw::of(&Field::new(
        Path::new("SLRG"),
        FieldAccessType::Byte,
        FieldLockRule::NoLock,
        FieldUpdateRule::WriteAsZeroes,
        vec![
            FieldEntry::Reserved(32),
            FieldEntry::Named(*b"SPEN", 1),
            FieldEntry::Named(*b"SINS", 1),
            FieldEntry::Named(*b"SRMV", 1),
            FieldEntry::Named(*b"SEJF", 1),
            FieldEntry::Reserved(4),
        ],
    ));
    let lock = Raw::of(&Mutex::new(Path::new("SLCK"), 0));
    let ssta = Raw::of(&Method::new(
        Path::new("SSTA"),
        1,
        true,
        vec![
            &Acquire::new(Path::new("SLCK"), 0xffff),
            &Store::new(&Path::new("SSEL"), &aml::Arg(0)),
            &Store::new(&Local(0), &aml::ZERO),
            &If::new(
                &Equal::new(&Path::new("SPEN"), &aml::ONE),
                vec![&Store::new(&Local(0), &0xfu8)],
            ),
            &Release::new(Path::new("SLCK")),
            &Return::new(&Local(0)),
        ],
    ));
    let sej0 = Raw::of(&Method::new(
        Path::new("SEJ0"),
        1,
        true,
        vec![
            &Acquire::new(Path::new("SLCK"), 0xffff),
            &Store::new(&Path::new("SSEL"), &aml::Arg(0)),
            &Store::new(&Path::new("SEJF"), &aml::ONE),
            &Release::new(Path::new("SLCK")),
        ],
    ));
    let mut scan: Vec<Vec<u8>> = Vec::new();
    let mut devs: Vec<Vec<u8>> = Vec::new();
    for n in 0..count {
        let slot = first_slot + n;
        let Some((base, irq)) = layout::virtio_slot(slot) else {
            break;
        };
        let name = format!("S{slot:03X}");
        scan.push(aml_bytes(&[
            &Store::new(&Path::new("SSEL"), &slot),
            &If::new(
                &Equal::new(&Path::new("SINS"), &aml::ONE),
                vec![
                    &Notify::new(&Path::new("HPSL"), &0u8),
                    &Store::new(&Path::new("SINS"), &aml::ONE),
                ],
            ),
            &If::new(
                &Equal::new(&Path::new("SRMV"), &aml::ONE),
                vec![
                    &Notify::new(&Path::new(&name), &3u8),
                    &Store::new(&Path::new("SRMV"), &aml::ONE),
                ],
            ),
        ]));
        let inner = virtio_device("VIRT", slot, VirtioAcpiDevice { base, irq });
        let sta = Raw::of(&Method::new(
            Path::new("_STA"),
            0,
            false,
            vec![&Return::new(&MethodCall::new(
                Path::new("SSTA"),
                vec![&slot],
            ))],
        ));
        let ej0 = Raw::of(&Method::new(
            Path::new("_EJ0"),
            1,
            false,
            vec![&MethodCall::new(Path::new("SEJ0"), vec![&slot])],
        ));
        devs.push(aml_bytes(&[&Device::new(
            Path::new(&name),
            vec![
                &Name::new(Path::new("_HID"), &"ACPI0004"),
                &Name::new(Path::new("_UID"), &(0x100 + slot)),
                &sta,
                &ej0,
                &RawAml(&inner),
            ],
        )]));
    }
    let scan_body = scan.concat();
    let sscn = Raw::of(&Method::new(
        Path::new("SSCN"),
        0,
        true,
        vec![
            &Acquire::new(Path::new("SLCK"), 0xffff),
            &RawAml(&scan_body),
            &Release::new(Path::new("SLCK")),
        ],
    ));
    let devs = devs.concat();
    aml_bytes(&[&Device::new(
        Path::new("HPSL"),
        vec![
            &Name::new(Path::new("_HID"), &"ACPI0004"),
            &Name::new(Path::new("_UID"), &0x10u8),
            &region,
            &sel_field,
            &flag_field,
            &lock,
            &ssta,
            &sej0,
            &sscn,
            &RawAml(&devs),
        ],
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn dsdt_names_the_devices() {
        let d = build(&DsdtConfig {
            boot_vcpus: 1,
            max_vcpus: 3,
            virtio: vec![VirtioAcpiDevice {
                base: layout::VIRTIO_MMIO_START,
                irq: layout::IRQ_VIRTIO_FIRST,
            }],
            hotplug_slots: 2,
        });
        assert_eq!(&d[..4], b"DSDT");
        let len = u32::from_le_bytes(d[4..8].try_into().unwrap()) as usize;
        assert_eq!(len, d.len());
        assert_eq!(d.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        for name in [
            &b"LNRO0005"[..],
            b"ACPI0013",
            b"ACPI0010",
            b"ACPI0007",
            b"C002",
            b"COM1",
            b"VR00",
            b"S001",
            b"S002",
            b"_S5_",
            b"_EVT",
        ] {
            assert!(contains(&d, name), "{}", String::from_utf8_lossy(name));
        }
        assert!(!contains(&d, b"C003"));
    }
}
