//! The kernel command line: ward-vmm's own parameters first, the caller's after (so the
//! caller's win where the kernel takes the last value).

use super::Error;
use crate::arch::x86_64::layout;

/// The console on COM1 (the runtime reads its log), reboot through the i8042 reset line
/// (which ends this process), and a panic that reboots, so a dead guest ends the VMM
/// instead of hanging.
pub const BASE: &str = "console=ttyS0 reboot=k panic=1";

/// ward-vmm's parameters followed by `extra`.
pub fn compose(extra: &str) -> String {
    let extra = extra.trim();
    if extra.is_empty() {
        BASE.to_string()
    } else {
        format!("{BASE} {extra}")
    }
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
        assert_eq!(compose(" quiet "), format!("{BASE} quiet"));
        assert_eq!(compose(""), BASE);
    }

    #[test]
    fn rejects_bad_bytes_and_length() {
        assert!(to_bytes("a\nb").is_err());
        assert!(to_bytes(&"x".repeat(layout::CMDLINE_MAX_SIZE)).is_err());
        assert_eq!(to_bytes("ab").unwrap(), b"ab\0");
    }
}
