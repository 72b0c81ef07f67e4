//! The CPU: whose it is, whether it offers hardware virtualization, and whether this host
//! is itself a guest (where KVM, if any, is nested or emulated).

use super::report::Item;

/// What /proc/cpuinfo says about the first CPU (they agree on these on x86).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuInfo {
    pub vendor_id: Option<String>,
    pub flags: Vec<String>,
}

impl CpuInfo {
    pub fn parse(cpuinfo: &str) -> CpuInfo {
        let field = |name: &str| {
            cpuinfo.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim().to_string())
            })
        };
        CpuInfo {
            vendor_id: field("vendor_id"),
            flags: field("flags")
                .map(|f| f.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
        }
    }

    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// The CPU items for the text of /proc/cpuinfo.
pub fn check(cpuinfo: &str) -> Vec<Item> {
    let cpu = CpuInfo::parse(cpuinfo);
    let vendor = match cpu.vendor_id.as_deref() {
        Some("GenuineIntel") => Item::pass("cpu.vendor", "Intel (GenuineIntel)"),
        Some("AuthenticAMD") => Item::pass("cpu.vendor", "AMD (AuthenticAMD)"),
        Some(other) => Item::warn(
            "cpu.vendor",
            format!("unrecognised vendor {other:?}"),
            "ward is tested on Intel and AMD x86-64 CPUs; others may work under TCG",
        ),
        None => Item::warn(
            "cpu.vendor",
            "/proc/cpuinfo names no vendor",
            "ward needs an x86-64 host (Intel or AMD)",
        ),
    };

    let extension = if cpu.has("vmx") {
        Some("vmx (Intel VT-x)")
    } else if cpu.has("svm") {
        Some("svm (AMD-V)")
    } else {
        None
    };
    let in_guest = cpu.has("hypervisor");
    let virt = match (extension, in_guest) {
        (Some(ext), false) => Item::pass("cpu.virtualization", format!("{ext} available")),
        (Some(ext), true) => Item::pass(
            "cpu.virtualization",
            format!("running inside a hypervisor that passes {ext} through (nested)"),
        )
        .detail("nested KVM can still be slow: the KVM items below measure it"),
        (None, true) => Item::warn(
            "cpu.virtualization",
            "running inside a hypervisor that exposes no vmx/svm: KVM here, if any, is \
             not hardware-backed",
            "enable nested virtualization for this VM in its hypervisor, or accept TCG \
             (slower, but it works)",
        ),
        (None, false) => Item::warn(
            "cpu.virtualization",
            "no vmx/svm flag: hardware virtualization is off or absent",
            "enable VT-x / AMD-V (SVM) in the firmware settings; until then ward uses TCG",
        ),
    };
    let virt = virt.detail(format!(
        "flags: vmx={} svm={} hypervisor={}",
        cpu.has("vmx"),
        cpu.has("svm"),
        in_guest
    ));
    vec![vendor, virt]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::Status;

    const INTEL: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme vmx sse2\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme vmx sse2\n";
    const AMD: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu svm sse2 npt\n";
    const GUEST: &str =
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 hypervisor\n";

    fn status(items: &[Item], id: &str) -> Status {
        items.iter().find(|i| i.id == id).map(|i| i.status).unwrap()
    }

    #[test]
    fn intel_with_vmx() {
        let items = check(INTEL);
        assert_eq!(items[0].message, "Intel (GenuineIntel)");
        assert_eq!(status(&items, "cpu.virtualization"), Status::Pass);
        assert!(items[1].message.contains("VT-x"));
    }

    #[test]
    fn amd_with_svm() {
        let items = check(AMD);
        assert_eq!(items[0].message, "AMD (AuthenticAMD)");
        assert_eq!(status(&items, "cpu.virtualization"), Status::Pass);
        assert!(items[1].message.contains("AMD-V"));
    }

    #[test]
    fn guest_without_nested_virtualization() {
        let items = check(GUEST);
        assert_eq!(status(&items, "cpu.vendor"), Status::Pass);
        assert_eq!(status(&items, "cpu.virtualization"), Status::Warn);
        assert!(items[1].message.contains("inside a hypervisor"));
        assert!(items[1].details[0].contains("hypervisor=true"));
    }

    #[test]
    fn empty_cpuinfo_warns() {
        let items = check("");
        assert_eq!(status(&items, "cpu.vendor"), Status::Warn);
        assert_eq!(status(&items, "cpu.virtualization"), Status::Warn);
    }
}
