//! vsock, the only way the host talks to the agent: in-kernel vhost-vsock, or the
//! vhost-device-vsock helper where /dev/vhost-vsock is not usable.

use super::report::Item;
use super::Lookup;

/// What was found on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    /// Opening /dev/vhost-vsock read-write: Ok, or why not.
    pub device: Result<(), String>,
    /// The configured `hypervisor.qemu.vsock_helper`, as given.
    pub helper_name: String,
    pub helper: Lookup,
    /// The helper's `--version` output, when it was run.
    pub helper_version: Option<Result<String, String>>,
}

pub fn check(inputs: &Inputs) -> Vec<Item> {
    let device_ok = inputs.device.is_ok();
    let device = match &inputs.device {
        Ok(()) => Item::pass("vsock.vhost", "/dev/vhost-vsock is usable: in-kernel vsock"),
        Err(why) => {
            let message = format!("/dev/vhost-vsock not usable ({why}): ward uses the helper");
            if matches!(inputs.helper, Lookup::InPath(_)) {
                Item::pass("vsock.vhost", message)
            } else {
                Item::warn(
                    "vsock.vhost",
                    message,
                    "modprobe vhost_vsock (where the host kernel has it), or install the helper",
                )
            }
        }
    };
    let name = &inputs.helper_name;
    let version = match &inputs.helper_version {
        Some(Ok(v)) => format!(", version {}", version_of(v)),
        Some(Err(why)) => format!(" (`--version` failed: {why})"),
        None => String::new(),
    };
    let helper = match (&inputs.helper, device_ok) {
        (Lookup::InPath(path), _) => {
            Item::pass("vsock.helper", format!("{}{version}", path.display()))
        }
        (Lookup::OutsidePath(path), false) => Item::fail(
            "vsock.helper",
            format!(
                "{name} is at {} but not in PATH, where ward looks{version}",
                path.display()
            ),
            format!(
                "add {} to PATH, or set hypervisor.qemu.vsock_helper = \"{}\"",
                path.parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                path.display()
            ),
        ),
        (Lookup::Missing, false) => Item::fail(
            "vsock.helper",
            format!("{name} is not installed and /dev/vhost-vsock is not usable: no vsock"),
            "cargo install vhost-device-vsock (and put ~/.cargo/bin in PATH), or modprobe \
             vhost_vsock",
        ),
        (Lookup::OutsidePath(path), true) => Item::pass(
            "vsock.helper",
            format!(
                "{} (not in PATH; not needed: vhost-vsock works)",
                path.display()
            ),
        ),
        (Lookup::Missing, true) => {
            Item::pass("vsock.helper", format!("{name} not installed (not needed)"))
        }
    };
    vec![device, helper]
}

/// "vhost-device-vsock 0.3.0" -> "0.3.0".
fn version_of(output: &str) -> String {
    let first = output.lines().next().unwrap_or("").trim();
    first.split_whitespace().last().unwrap_or(first).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::Status;
    use std::path::PathBuf;

    fn inputs(device: Result<(), String>, helper: Lookup) -> Inputs {
        Inputs {
            device,
            helper_name: "vhost-device-vsock".into(),
            helper,
            helper_version: Some(Ok("vhost-device-vsock 0.3.0\n".into())),
        }
    }

    #[test]
    fn helper_in_path_is_enough() {
        let path = PathBuf::from("/root/.cargo/bin/vhost-device-vsock");
        let items = check(&inputs(Err("ENOENT".into()), Lookup::InPath(path)));
        assert!(items.iter().all(|i| i.status == Status::Pass), "{items:?}");
        assert!(items[1].message.contains("version 0.3.0"));
    }

    #[test]
    fn nothing_at_all_fails() {
        let items = check(&inputs(Err("ENOENT".into()), Lookup::Missing));
        assert_eq!(items[1].status, Status::Fail);
        assert!(items[1].hint.as_deref().unwrap().contains("cargo install"));
    }

    #[test]
    fn helper_outside_path_names_the_fix() {
        let path = PathBuf::from("/root/.cargo/bin/vhost-device-vsock");
        let items = check(&inputs(Err("ENOENT".into()), Lookup::OutsidePath(path)));
        assert_eq!(items[1].status, Status::Fail);
        assert!(items[1]
            .hint
            .as_deref()
            .unwrap()
            .contains("/root/.cargo/bin"));
    }

    #[test]
    fn device_alone_is_enough() {
        let items = check(&inputs(Ok(()), Lookup::Missing));
        assert!(items.iter().all(|i| i.status == Status::Pass), "{items:?}");
    }
}
