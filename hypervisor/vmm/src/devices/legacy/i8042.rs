//! Just enough of the i8042 keyboard controller for the reset line: Linux's `reboot=k`
//! writes 0xFE (pulse reset) to the command port, which stops the VM.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::vstate::vcpu::{ExitReason, ExitSignal};

/// Offset of the command port (0x64) from the data port (0x60).
const COMMAND: u64 = 4;
const CMD_RESET_CPU: u8 = 0xfe;

pub struct I8042 {
    exit: Arc<ExitSignal>,
}

impl I8042 {
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        I8042 { exit }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer free, so no one waits on us.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == COMMAND && data.first() == Some(&CMD_RESET_CPU) {
            self.exit.request(ExitReason::Reboot("i8042 reset"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_stops_the_vm() {
        let exit = Arc::new(ExitSignal::new().unwrap());
        let mut dev = I8042::new(exit.clone());
        dev.write(COMMAND, &[0xaa]);
        assert_eq!(exit.reason(), None);
        dev.write(COMMAND, &[CMD_RESET_CPU]);
        assert_eq!(exit.reason(), Some(ExitReason::Reboot("i8042 reset")));
    }
}
