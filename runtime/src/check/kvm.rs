//! KVM: the device, its API, whether a VM and a vCPU can be made, and the timed loop that
//! says what KVM is worth here; then the accelerator ward will actually use.

use ward_hypervisor::{Accel, AccelChoice, KvmClass, ProbeReport};

use super::report::Item;

/// What ward will run VMs with, as far as KVM decides it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub items: Vec<Item>,
    pub accelerator: Option<Accel>,
}

/// The KVM items for a fresh probe `report`, the configured `choice`, and what
/// `accel::resolve` made of that choice.
pub fn check(
    report: &ProbeReport,
    choice: AccelChoice,
    resolved: Result<Accel, String>,
) -> Decision {
    let mut items = Vec::new();
    items.push(device(report));
    if report.api_version.is_some() {
        items.push(vm_creation(report));
        items.push(speed(report));
    }
    let (accel_item, accelerator) = accelerator(report, choice, resolved);
    items.push(accel_item);
    Decision { items, accelerator }
}

fn device(report: &ProbeReport) -> Item {
    match (report.kvm_present, report.api_version) {
        (_, Some(api)) if api == 12 => {
            Item::pass("kvm.device", format!("/dev/kvm opened, API version {api}"))
        }
        (_, Some(api)) => Item::warn(
            "kvm.device",
            format!("/dev/kvm opened but its API version is {api}, not the stable 12"),
            "use a host kernel with the standard KVM API",
        ),
        (true, None) => Item::warn(
            "kvm.device",
            format!("/dev/kvm exists but cannot be used: {}", report.reason),
            "run ward as root, or give its user read-write access to /dev/kvm (the kvm \
             group); until then ward uses TCG",
        ),
        (false, None) => Item::warn(
            "kvm.device",
            "/dev/kvm does not exist: ward uses TCG (guest code is translated, several \
             times slower)",
            "load the KVM module (modprobe kvm_intel or kvm_amd) on a host with \
             hardware virtualization enabled",
        ),
    }
}

fn vm_creation(report: &ProbeReport) -> Item {
    if report.ring0_iterations_per_sec > 0.0 {
        Item::pass("kvm.vm", "created a VM and a vCPU and ran guest code")
    } else {
        Item::warn(
            "kvm.vm",
            format!("KVM could not run the probe VM: {}", report.reason),
            "check dmesg for KVM errors; until then ward uses TCG",
        )
    }
}

fn speed(report: &ProbeReport) -> Item {
    let ring3 = match (report.ring3_iterations_per_sec, &report.ring3_note) {
        (Some(rate), _) => format!("{:.1}M/s", rate / 1e6),
        (None, Some(note)) => format!("not measured ({note})"),
        (None, None) => "not measured".to_string(),
    };
    let numbers = format!(
        "ring 0: {:.1}M loop iterations/s, ring 3: {ring3}",
        report.ring0_iterations_per_sec / 1e6
    );
    let item = match report.class {
        KvmClass::Hardware => Item::pass("kvm.class", format!("hardware: {}", report.reason)),
        KvmClass::Nested => Item::pass("kvm.class", format!("nested: {}", report.reason)),
        KvmClass::EmulatedRing0 => Item::warn(
            "kvm.class",
            format!("emulated ring 0: {}", report.reason),
            "KVM here does not run guest kernel code in hardware (e.g. a PVM host, or a \
             VM without nested VT-x/AMD-V): ward uses TCG. For KVM speed run on bare metal \
             or a VM with nested virtualization",
        ),
        KvmClass::Absent | KvmClass::Unusable => Item::warn(
            "kvm.class",
            format!("{}: {}", report.class, report.reason),
            "ward uses TCG until KVM works",
        ),
    };
    item.detail(numbers)
}

fn accelerator(
    report: &ProbeReport,
    choice: AccelChoice,
    resolved: Result<Accel, String>,
) -> (Item, Option<Accel>) {
    let choice_name = match choice {
        AccelChoice::Auto => "auto",
        AccelChoice::Kvm => "kvm",
        AccelChoice::Tcg => "tcg",
    };
    let accel = match resolved {
        Ok(accel) => accel,
        Err(why) => {
            return (
                Item::fail(
                    "kvm.accelerator",
                    format!("hypervisor.accel = \"{choice_name}\": {why}"),
                    "fix /dev/kvm, or set hypervisor.accel = \"auto\" (or \"tcg\")",
                ),
                None,
            )
        }
    };
    let message = format!("qemu with {accel} (hypervisor.accel = \"{choice_name}\")");
    let item = match (choice, report.class) {
        (AccelChoice::Kvm, KvmClass::EmulatedRing0) => Item::warn(
            "kvm.accelerator",
            message,
            "KVM is emulated here and TCG is faster: set hypervisor.accel = \"auto\"",
        ),
        (AccelChoice::Tcg, class) if class.runs_guest_kernels_in_hardware() => Item::warn(
            "kvm.accelerator",
            message,
            "hardware KVM is available: set hypervisor.accel = \"auto\" for speed",
        ),
        _ => Item::pass("kvm.accelerator", message),
    };
    (item, Some(accel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::Status;
    use ward_hypervisor::accel::report::{measured, unusable};

    fn find<'a>(d: &'a Decision, id: &str) -> &'a Item {
        d.items.iter().find(|i| i.id == id).unwrap()
    }

    #[test]
    fn missing_dev_kvm_means_tcg() {
        let report = unusable(false, None, "cannot open /dev/kvm: ENOENT".into());
        let d = check(&report, AccelChoice::Auto, Ok(Accel::Tcg));
        let device = find(&d, "kvm.device");
        assert_eq!(device.status, Status::Warn);
        assert!(device.message.contains("does not exist"));
        assert!(device.hint.as_deref().unwrap().contains("modprobe"));
        assert!(d.items.iter().all(|i| i.id != "kvm.class"));
        assert_eq!(d.accelerator, Some(Accel::Tcg));
        assert_eq!(find(&d, "kvm.accelerator").status, Status::Pass);
    }

    #[test]
    fn forced_kvm_without_device_fails() {
        let report = unusable(false, None, "cannot open /dev/kvm: ENOENT".into());
        let d = check(
            &report,
            AccelChoice::Kvm,
            Err("/dev/kvm cannot be opened".into()),
        );
        assert_eq!(find(&d, "kvm.accelerator").status, Status::Fail);
        assert_eq!(d.accelerator, None);
    }

    #[test]
    fn emulated_kvm_warns_and_uses_tcg() {
        let report = measured(12, 0.6e6, Ok(2.5e9), true);
        let d = check(&report, AccelChoice::Auto, Ok(Accel::Tcg));
        assert_eq!(find(&d, "kvm.device").status, Status::Pass);
        assert_eq!(find(&d, "kvm.vm").status, Status::Pass);
        let class = find(&d, "kvm.class");
        assert_eq!(class.status, Status::Warn);
        assert!(
            class.message.starts_with("emulated ring 0"),
            "{}",
            class.message
        );
        assert!(
            class.details[0].contains("ring 3: 2500.0M/s"),
            "{:?}",
            class.details
        );
        let forced = check(&report, AccelChoice::Kvm, Ok(Accel::Kvm));
        assert_eq!(find(&forced, "kvm.accelerator").status, Status::Warn);
    }

    #[test]
    fn hardware_and_nested_kvm_pass() {
        for (under_hypervisor, name) in [(false, "hardware: "), (true, "nested: ")] {
            let report = measured(12, 3e9, Ok(3e9), under_hypervisor);
            let d = check(&report, AccelChoice::Auto, Ok(Accel::Kvm));
            assert!(
                d.items.iter().all(|i| i.status == Status::Pass),
                "{:?}",
                d.items
            );
            assert!(find(&d, "kvm.class").message.starts_with(name));
            assert_eq!(d.accelerator, Some(Accel::Kvm));
            let forced_tcg = check(&report, AccelChoice::Tcg, Ok(Accel::Tcg));
            assert_eq!(find(&forced_tcg, "kvm.accelerator").status, Status::Warn);
        }
    }
}
