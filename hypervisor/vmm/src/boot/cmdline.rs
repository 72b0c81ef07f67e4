//! The kernel command line: ward-vmm's own parameters first, the caller's after (so the
//! caller's win where the kernel takes the last value).

use super::Error;
use crate::arch::x86_64::layout;

/// The console on COM1 (the runtime reads its log), reboot through the i8042 reset line
/// (which ends this process), and a panic that reboots, so a dead guest ends the VMM
/// instead of hanging.
pub const BASE: &str = "console=ttyS0 reboot=k panic=1";

/// For hosts whose KVM emulates guest ring 0 instruction by instruction (PVM): keeps
/// the kernel off instructions KVM's emulator lacks and that it would otherwise pick
/// from CPUID, which such hosts pass through from the host CPU. Seen failing there:
/// `xrstor` (FPU init) and `lock cmpxchg16b` (SLUB); the others are the same kind
/// (RDRAND/RDSEED, FSGSBASE, INVPCID, PKU's WRPKRU, POPCNT are not in the emulator).
pub const EMULATED_RING0: &str =
    "noxsave clearcpuid=cx16,popcnt,rdrand,rdseed,fsgsbase,invpcid,pku";

/// ward-vmm's parameters, then the machine's (`machine`), then the caller's `extra`.
pub fn compose(machine: &[&str], extra: &str) -> String {
    let mut params = BASE.to_string();
    for p in machine.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        params.push(' ');
        params.push_str(p);
    }
    let extra = extra.trim();
    if !extra.is_empty() {
        params.push(' ');
        params.push_str(extra);
    }
    params
}

/// The NUL-terminated bytes to put in guest memory.
pub fn to_bytes(cmdline: &str) -> Result<Vec<u8>, Error> {
    if cmdline
        .bytes()
        .any(|b| b == 0 || !(0x20..0x7f).contains(&b))
    {
        return Err(Error::Cmdline(
            "only printable ASCII is allowed".to_string(),
        ));
    }
    if cmdline.len() + 1 > layout::CMDLINE_MAX_SIZE {
        return Err(Error::Cmdline(format!(
            "{} bytes, more than the {} allowed",
            cmdline.len(),
            layout::CMDLINE_MAX_SIZE - 1
        )));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_goes_last() {
        assert_eq!(compose(&[], " quiet "), format!("{BASE} quiet"));
        assert_eq!(compose(&["acpi=off", ""], ""), format!("{BASE} acpi=off"));
        assert_eq!(compose(&[], ""), BASE);
    }

    #[test]
    fn rejects_bad_bytes_and_length() {
        assert!(to_bytes("a\nb").is_err());
        assert!(to_bytes(&"x".repeat(layout::CMDLINE_MAX_SIZE)).is_err());
        assert_eq!(to_bytes("ab").unwrap(), b"ab\0");
    }
}
