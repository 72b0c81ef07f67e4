//! Tests of the virtio-mmio register interface.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::status::*;
use super::*;
use crate::devices::virtio::test_util::{guest_mem, MockInterrupt};

#[derive(Default)]
struct Shared {
    activated: AtomicBool,
    acked: AtomicU64,
    config: Mutex<[u8; 8]>,
    resets: AtomicU64,
}

struct MockDevice {
    shared: Arc<Shared>,
    fail_activate: bool,
    resettable: bool,
}

const MOCK_FEATURES: u64 = VIRTIO_F_VERSION_1 | 1 << 5;

impl VirtioDevice for MockDevice {
    fn device_type(&self) -> u32 {
        4
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn device_features(&self) -> u64 {
        MOCK_FEATURES
    }
    fn ack_features(&mut self, features: u64) {
        self.shared.acked.store(features, Ordering::SeqCst);
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::devices::virtio::read_config_bytes(
            &*self.shared.config.lock().unwrap(),
            offset,
            data,
        );
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut cfg = self.shared.config.lock().unwrap();
        let o = offset as usize;
        if o + data.len() <= cfg.len() {
            cfg[o..o + data.len()].copy_from_slice(data);
        }
    }
    fn activate(
        &mut self,
        _mem: GuestMem,
        _interrupt: Arc<dyn Interrupt>,
        queues: Vec<(Queue, EventFd)>,
    ) -> Result<(), ActivateError> {
        if self.fail_activate {
            return Err(ActivateError::Backend("mock refuses".into()));
        }
        assert_eq!(queues.len(), 2);
        assert!(queues[0].0.ready());
        self.shared.activated.store(true, Ordering::SeqCst);
        Ok(())
    }
    fn reset(&mut self) -> bool {
        self.shared.resets.fetch_add(1, Ordering::SeqCst);
        self.shared.activated.store(false, Ordering::SeqCst);
        self.resettable
    }
}

struct Fixture {
    t: MmioTransport,
    shared: Arc<Shared>,
    irq: Arc<MockInterrupt>,
}

fn fixture_with(fail_activate: bool, resettable: bool) -> Fixture {
    let shared = Arc::new(Shared::default());
    let irq = Arc::new(MockInterrupt::default());
    let dev = MockDevice {
        shared: Arc::clone(&shared),
        fail_activate,
        resettable,
    };
    let t = MmioTransport::new(guest_mem(), Box::new(dev), irq.clone()).unwrap();
    Fixture { t, shared, irq }
}

fn fixture() -> Fixture {
    fixture_with(false, true)
}

fn rd(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn wr(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

fn negotiate(t: &mut MmioTransport, features: u64) {
    wr(t, REG_STATUS, ACKNOWLEDGE);
    wr(t, REG_STATUS, ACKNOWLEDGE | DRIVER);
    wr(t, REG_DRIVER_FEATURES_SEL, 0);
    wr(t, REG_DRIVER_FEATURES, features as u32);
    wr(t, REG_DRIVER_FEATURES_SEL, 1);
    wr(t, REG_DRIVER_FEATURES, (features >> 32) as u32);
    wr(t, REG_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
}

fn setup_queue(t: &mut MmioTransport, sel: u32, size: u32, base: u64) {
    wr(t, REG_QUEUE_SEL, sel);
    wr(t, REG_QUEUE_NUM, size);
    wr(t, REG_QUEUE_DESC_LOW, base as u32);
    wr(t, REG_QUEUE_DESC_HIGH, (base >> 32) as u32);
    wr(t, REG_QUEUE_DRIVER_LOW, (base + 0x1000) as u32);
    wr(t, REG_QUEUE_DRIVER_HIGH, 0);
    wr(t, REG_QUEUE_DEVICE_LOW, (base + 0x2000) as u32);
    wr(t, REG_QUEUE_DEVICE_HIGH, 0);
    wr(t, REG_QUEUE_READY, 1);
}

fn bring_up(t: &mut MmioTransport) {
    negotiate(t, MOCK_FEATURES);
    setup_queue(t, 0, 16, 0x10000);
    setup_queue(t, 1, 8, 0x20000);
    wr(
        t,
        REG_STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
}

#[test]
fn identity_registers() {
    let mut f = fixture();
    assert_eq!(rd(&mut f.t, REG_MAGIC), 0x7472_6976);
    assert_eq!(rd(&mut f.t, REG_VERSION), 2);
    assert_eq!(rd(&mut f.t, REG_DEVICE_ID), 4);
    assert_eq!(rd(&mut f.t, REG_VENDOR_ID), VENDOR_ID);
    assert_eq!(rd(&mut f.t, REG_SHM_LEN_LOW), u32::MAX);
    assert_eq!(f.t.queue_evts().len(), 2);
    assert_eq!(f.t.device_type(), 4);
}

#[test]
fn odd_sized_and_unaligned_register_accesses_are_ignored() {
    let mut f = fixture();
    let mut b = [0xffu8; 2];
    f.t.read(REG_MAGIC, &mut b);
    assert_eq!(b, [0, 0]);
    let mut b = [0xffu8; 4];
    f.t.read(REG_MAGIC + 1, &mut b);
    assert_eq!(b, [0; 4]);
    f.t.write(REG_STATUS, &[1u8]);
    assert_eq!(rd(&mut f.t, REG_STATUS), 0);
    // Reads past the register file but before config space read zero.
    assert_eq!(rd(&mut f.t, 0xf0), 0);
}

#[test]
fn device_features_are_paged_by_select() {
    let mut f = fixture();
    wr(&mut f.t, REG_DEVICE_FEATURES_SEL, 0);
    assert_eq!(rd(&mut f.t, REG_DEVICE_FEATURES), 1 << 5);
    wr(&mut f.t, REG_DEVICE_FEATURES_SEL, 1);
    assert_eq!(rd(&mut f.t, REG_DEVICE_FEATURES), 1);
    wr(&mut f.t, REG_DEVICE_FEATURES_SEL, 7);
    assert_eq!(rd(&mut f.t, REG_DEVICE_FEATURES), 0);
}

#[test]
fn features_ok_accepts_a_subset_with_version_1() {
    let mut f = fixture();
    negotiate(&mut f.t, VIRTIO_F_VERSION_1);
    assert_eq!(rd(&mut f.t, REG_STATUS), ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(f.shared.acked.load(Ordering::SeqCst), VIRTIO_F_VERSION_1);
}

#[test]
fn features_ok_refuses_unoffered_or_legacy_features() {
    let mut f = fixture();
    negotiate(&mut f.t, VIRTIO_F_VERSION_1 | 1 << 7);
    assert_eq!(rd(&mut f.t, REG_STATUS), ACKNOWLEDGE | DRIVER);
    let mut f = fixture();
    negotiate(&mut f.t, 1 << 5);
    assert_eq!(rd(&mut f.t, REG_STATUS), ACKNOWLEDGE | DRIVER);
    assert_eq!(f.shared.acked.load(Ordering::SeqCst), 0);
}

#[test]
fn driver_features_are_ignored_outside_negotiation() {
    let mut f = fixture();
    // Before DRIVER.
    wr(&mut f.t, REG_DRIVER_FEATURES, 1 << 5);
    negotiate(&mut f.t, VIRTIO_F_VERSION_1);
    // After FEATURES_OK.
    wr(&mut f.t, REG_DRIVER_FEATURES_SEL, 0);
    wr(&mut f.t, REG_DRIVER_FEATURES, 1 << 5);
    assert_eq!(f.t.driver_features, VIRTIO_F_VERSION_1);
}

#[test]
fn status_bits_must_come_in_order() {
    let mut f = fixture();
    wr(&mut f.t, REG_STATUS, DRIVER);
    assert_eq!(rd(&mut f.t, REG_STATUS), 0);
    wr(&mut f.t, REG_STATUS, ACKNOWLEDGE);
    wr(
        &mut f.t,
        REG_STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    assert_eq!(rd(&mut f.t, REG_STATUS), ACKNOWLEDGE);
    wr(&mut f.t, REG_STATUS, ACKNOWLEDGE | DRIVER);
    // DRIVER_OK before FEATURES_OK is refused.
    wr(&mut f.t, REG_STATUS, ACKNOWLEDGE | DRIVER | DRIVER_OK);
    assert_eq!(rd(&mut f.t, REG_STATUS), ACKNOWLEDGE | DRIVER);
    assert!(!f.shared.activated.load(Ordering::SeqCst));
    wr(&mut f.t, REG_STATUS, FAILED);
    assert_eq!(rd(&mut f.t, REG_STATUS) & FAILED, FAILED);
}

#[test]
fn queue_registers_follow_the_selector() {
    let mut f = fixture();
    assert_eq!(rd(&mut f.t, REG_QUEUE_NUM_MAX), 16);
    wr(&mut f.t, REG_QUEUE_SEL, 1);
    assert_eq!(rd(&mut f.t, REG_QUEUE_NUM_MAX), 8);
    wr(&mut f.t, REG_QUEUE_SEL, 2);
    assert_eq!(rd(&mut f.t, REG_QUEUE_NUM_MAX), 0);
    assert_eq!(rd(&mut f.t, REG_QUEUE_READY), 0);
    // Writes to a missing queue go nowhere.
    negotiate(&mut f.t, VIRTIO_F_VERSION_1);
    wr(&mut f.t, REG_QUEUE_SEL, 9);
    wr(&mut f.t, REG_QUEUE_READY, 1);
    assert_eq!(rd(&mut f.t, REG_QUEUE_READY), 0);
}

#[test]
fn queue_setup_is_refused_before_features_ok() {
    let mut f = fixture();
    wr(&mut f.t, REG_STATUS, ACKNOWLEDGE);
    wr(&mut f.t, REG_STATUS, ACKNOWLEDGE | DRIVER);
    wr(&mut f.t, REG_QUEUE_SEL, 0);
    wr(&mut f.t, REG_QUEUE_READY, 1);
    assert_eq!(rd(&mut f.t, REG_QUEUE_READY), 0);
}

#[test]
fn driver_ok_activates_with_valid_queues() {
    let mut f = fixture();
    bring_up(&mut f.t);
    assert!(f.shared.activated.load(Ordering::SeqCst));
    assert!(f.t.is_active());
    assert_eq!(rd(&mut f.t, REG_STATUS) & DEVICE_NEEDS_RESET, 0);
    // Queue registers are frozen once the device runs.
    wr(&mut f.t, REG_QUEUE_SEL, 0);
    wr(&mut f.t, REG_QUEUE_NUM, 4);
    assert_eq!(f.t.queues[0].size(), 16);
}

#[test]
fn queue_outside_guest_memory_needs_reset() {
    let mut f = fixture();
    negotiate(&mut f.t, MOCK_FEATURES);
    setup_queue(&mut f.t, 0, 16, 0x10000);
    setup_queue(&mut f.t, 1, 8, 0xffff_ffff_0000);
    wr(
        &mut f.t,
        REG_STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    assert!(!f.shared.activated.load(Ordering::SeqCst));
    assert_ne!(rd(&mut f.t, REG_STATUS) & DEVICE_NEEDS_RESET, 0);
    assert_eq!(rd(&mut f.t, REG_INTERRUPT_STATUS), 2);
}

#[test]
fn invalid_queue_size_needs_reset() {
    let mut f = fixture();
    negotiate(&mut f.t, MOCK_FEATURES);
    setup_queue(&mut f.t, 0, 12, 0x10000); // not a power of two
    setup_queue(&mut f.t, 1, 8, 0x20000);
    wr(
        &mut f.t,
        REG_STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    assert!(!f.shared.activated.load(Ordering::SeqCst));
    assert_ne!(rd(&mut f.t, REG_STATUS) & DEVICE_NEEDS_RESET, 0);
}

#[test]
fn failed_activation_needs_reset() {
    let mut f = fixture_with(true, true);
    bring_up(&mut f.t);
    assert!(!f.t.is_active());
    assert_ne!(rd(&mut f.t, REG_STATUS) & DEVICE_NEEDS_RESET, 0);
}

#[test]
fn notify_signals_the_queue_eventfd() {
    let mut f = fixture();
    bring_up(&mut f.t);
    wr(&mut f.t, REG_QUEUE_NOTIFY, 1);
    assert_eq!(f.t.queue_evts()[1].read().unwrap(), 1);
    assert!(f.t.queue_evts()[0].read().is_err());
    // An index past the last queue is ignored.
    wr(&mut f.t, REG_QUEUE_NOTIFY, 77);
}

#[test]
fn interrupt_status_and_ack() {
    let mut f = fixture();
    f.irq.trigger(InterruptStatus::USED_RING).unwrap();
    f.irq.trigger(InterruptStatus::CONFIG_CHANGE).unwrap();
    assert_eq!(rd(&mut f.t, REG_INTERRUPT_STATUS), 3);
    wr(&mut f.t, REG_INTERRUPT_ACK, 1);
    assert_eq!(rd(&mut f.t, REG_INTERRUPT_STATUS), 2);
    wr(&mut f.t, REG_INTERRUPT_ACK, 2);
    assert_eq!(rd(&mut f.t, REG_INTERRUPT_STATUS), 0);
}

#[test]
fn reset_returns_to_the_initial_state() {
    let mut f = fixture();
    bring_up(&mut f.t);
    f.irq.trigger(InterruptStatus::USED_RING).unwrap();
    wr(&mut f.t, REG_STATUS, 0);
    assert_eq!(f.shared.resets.load(Ordering::SeqCst), 1);
    assert!(!f.t.is_active());
    assert_eq!(rd(&mut f.t, REG_STATUS), 0);
    assert_eq!(rd(&mut f.t, REG_INTERRUPT_STATUS), 0);
    assert_eq!(rd(&mut f.t, REG_QUEUE_READY), 0);
    // The device can be brought up again.
    bring_up(&mut f.t);
    assert!(f.shared.activated.load(Ordering::SeqCst));
}

#[test]
fn unresettable_device_is_marked_failed() {
    let mut f = fixture_with(false, false);
    bring_up(&mut f.t);
    wr(&mut f.t, REG_STATUS, 0);
    assert_eq!(rd(&mut f.t, REG_STATUS), FAILED);
}

#[test]
fn config_space_reads_and_writes() {
    let mut f = fixture();
    *f.shared.config.lock().unwrap() = [1, 2, 3, 4, 5, 6, 7, 8];
    let mut b = [0u8; 2];
    f.t.read(CONFIG_SPACE + 6, &mut b);
    assert_eq!(b, [7, 8]);
    let mut b = [0xffu8; 4];
    f.t.read(CONFIG_SPACE + 6, &mut b);
    assert_eq!(b, [7, 8, 0, 0]);
    // Before DRIVER, config writes are ignored.
    f.t.write(CONFIG_SPACE, &[9]);
    assert_eq!(f.shared.config.lock().unwrap()[0], 1);
    wr(&mut f.t, REG_STATUS, ACKNOWLEDGE);
    wr(&mut f.t, REG_STATUS, ACKNOWLEDGE | DRIVER);
    f.t.write(CONFIG_SPACE, &[9]);
    assert_eq!(f.shared.config.lock().unwrap()[0], 9);
    assert_eq!(rd(&mut f.t, REG_CONFIG_GENERATION), 0);
}
