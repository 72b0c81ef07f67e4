//! QEMU: the configured binary, its version, the machine types and accelerators it has.

use std::path::PathBuf;

use ward_hypervisor::Accel;

use super::report::Item;
use super::Lookup;

/// What running the binary told us; each Err says why an output could not be had.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    /// `hypervisor.qemu.binary`, as configured.
    pub binary: PathBuf,
    pub lookup: Lookup,
    pub version: Result<String, String>,
    pub machine_help: Result<String, String>,
    pub accel_help: Result<String, String>,
    /// `hypervisor.qemu.machine`.
    pub machine: String,
    /// The accelerator ward will use, when known.
    pub accel: Option<Accel>,
}

/// The first word of each line of `-machine help` (after its header).
fn machine_names(help: &str) -> Vec<&str> {
    help.lines()
        .skip_while(|l| !l.starts_with("Supported machines"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// The lines of `-accel help` after its header.
fn accel_names(help: &str) -> Vec<&str> {
    help.lines()
        .skip_while(|l| !l.starts_with("Accelerators supported"))
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn check(inputs: &Inputs) -> Vec<Item> {
    let path = match &inputs.lookup {
        Lookup::InPath(path) => path.clone(),
        Lookup::OutsidePath(_) | Lookup::Missing => {
            return vec![Item::fail(
                "qemu.binary",
                format!(
                    "{} (hypervisor.qemu.binary) is not installed or not in PATH",
                    inputs.binary.display()
                ),
                "apt-get install qemu-system-x86, or set hypervisor.qemu.binary to its path",
            )];
        }
    };
    let mut items = vec![Item::pass("qemu.binary", path.display().to_string())];
    items.push(match &inputs.version {
        Ok(text) => {
            let first = text.lines().next().unwrap_or("").trim();
            let version = first
                .strip_prefix("QEMU emulator version ")
                .unwrap_or(first);
            Item::pass("qemu.version", version.to_string())
        }
        Err(why) => Item::fail(
            "qemu.version",
            format!("{} --version failed: {why}", path.display()),
            "reinstall QEMU",
        ),
    });
    items.push(match &inputs.machine_help {
        Ok(help) => machines(help, &inputs.machine),
        Err(why) => Item::fail(
            "qemu.machines",
            format!("-machine help failed: {why}"),
            "reinstall QEMU",
        ),
    });
    items.push(match &inputs.accel_help {
        Ok(help) => accels(help, inputs.accel),
        Err(why) => Item::fail(
            "qemu.accels",
            format!("-accel help failed: {why}"),
            "reinstall QEMU",
        ),
    });
    items
}

fn machines(help: &str, configured: &str) -> Item {
    let names = machine_names(help);
    let has = |m: &str| names.contains(&m);
    let listing = format!(
        "microvm {}, q35 {}",
        if has("microvm") { "yes" } else { "no" },
        if has("q35") { "yes" } else { "no" }
    );
    if ward_hypervisor::qemu::cmdline::Machine::parse(configured).is_err() {
        return Item::fail(
            "qemu.machines",
            format!("hypervisor.qemu.machine = {configured:?} is not one ward supports; {listing}"),
            "set hypervisor.qemu.machine = \"microvm\" (or \"q35\")",
        );
    }
    if !has(configured) {
        return Item::fail(
            "qemu.machines",
            format!(
                "this QEMU has no machine type {configured:?} (hypervisor.qemu.machine); {listing}"
            ),
            "use a QEMU with it (Debian's qemu-system-x86 has both), or set \
             hypervisor.qemu.machine to the other one",
        );
    }
    Item::pass("qemu.machines", format!("{listing}; using {configured}"))
        .detail(format!("{} machine types", names.len()))
}

fn accels(help: &str, accel: Option<Accel>) -> Item {
    let names = accel_names(help);
    let message = format!("accelerators: {}", names.join(", "));
    match accel {
        Some(a) if !names.contains(&a.to_string().as_str()) => Item::fail(
            "qemu.accels",
            format!("{message}; but ward would use {a}"),
            format!("use a QEMU built with {a}, or change hypervisor.accel"),
        ),
        _ if !names.contains(&"tcg") => Item::warn(
            "qemu.accels",
            format!("{message}: no tcg to fall back on"),
            "install a QEMU with TCG (Debian's qemu-system-x86 has it)",
        ),
        _ => Item::pass("qemu.accels", message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::Status;

    const MACHINES: &str = "Supported machines are:\nmicrovm              microvm (i386)\npc                   Standard PC\nq35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)\n";
    const ACCELS: &str = "Accelerators supported in QEMU binary:\ntcg\nkvm\n";

    fn inputs(machine: &str, machines: &str, accels: &str) -> Inputs {
        Inputs {
            binary: "qemu-system-x86_64".into(),
            lookup: Lookup::InPath("/usr/bin/qemu-system-x86_64".into()),
            version: Ok("QEMU emulator version 7.2.22 (Debian)\nCopyright".into()),
            machine_help: Ok(machines.into()),
            accel_help: Ok(accels.into()),
            machine: machine.into(),
            accel: Some(Accel::Tcg),
        }
    }

    #[test]
    fn a_complete_qemu_passes() {
        let items = check(&inputs("microvm", MACHINES, ACCELS));
        assert!(items.iter().all(|i| i.status == Status::Pass), "{items:?}");
        assert_eq!(items[1].message, "7.2.22 (Debian)");
        assert!(items[2].message.contains("microvm yes, q35 yes"));
        assert_eq!(items[3].message, "accelerators: tcg, kvm");
    }

    #[test]
    fn missing_machine_or_accel_fails() {
        let no_microvm = "Supported machines are:\nq35   Standard PC\n";
        assert_eq!(
            check(&inputs("microvm", no_microvm, ACCELS))[2].status,
            Status::Fail
        );
        assert_eq!(
            check(&inputs("virt", MACHINES, ACCELS))[2].status,
            Status::Fail
        );
        let kvm_only = "Accelerators supported in QEMU binary:\nkvm\n";
        assert_eq!(
            check(&inputs("microvm", MACHINES, kvm_only))[3].status,
            Status::Fail
        );
    }

    #[test]
    fn missing_binary_fails() {
        let mut i = inputs("microvm", MACHINES, ACCELS);
        i.lookup = Lookup::Missing;
        let items = check(&i);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].status, Status::Fail);
    }
}
