//! A rootfs on a block device (Kata's `hotplugDrive`): when the bundle's rootfs is a whole
//! ext4 file system mounted from a block device (here a loop-mounted image of the test
//! image's files, as containerd's devmapper snapshotter would hand one over), the VM gets
//! the device and the guest's `/` is that file system, not a 9p or virtio-fs share. The
//! host's mount turns read-only while the guest owns the device; what the guest writes is
//! in the image afterwards, and the disk leaves with the container.

use std::process::Command;

use ward_e2e::mounted_image::{is_disk_root, MountedImage};
use ward_e2e::{text, Ward};

#[test]
fn a_rootfs_on_a_block_device_is_the_guests_root_and_keeps_what_it_wrote() {
    let ward = Ward::new();
    let script = "grep ' / ' /proc/mounts; cat /etc/ward-image-marker; \
                  echo written-in-the-guest > /from-the-guest; sync";
    let bundle = ward.bundle("blockroot", &["sh", "-c", script]);
    let rootfs = bundle.join("rootfs");
    // The image holds the bundle's files plus a marker; it is mounted over the rootfs.
    std::fs::write(rootfs.join("etc/ward-image-marker"), "from-the-image\n").unwrap();
    let image = MountedImage::new(&rootfs, bundle.join("rootfs.img"), &rootfs);
    assert!(
        image.options().split(',').any(|o| o == "rw"),
        "the image should start read-write: {}",
        image.options()
    );

    let started = std::time::Instant::now();
    let out = ward.run(&["run", "--bundle", bundle.to_str().unwrap(), "blockroot"]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "run: {said} {}", text(&out.stderr));
    println!("run on a block rootfs: {:?}", started.elapsed());
    let root = said.lines().next().unwrap_or_default();
    assert!(
        is_disk_root(root),
        "the guest's / is not the device's ext4: {said}"
    );
    assert!(said.contains("from-the-image"), "{said}");

    // Once the guest owned it (and after: `run` deleted the container), the host's
    // mount is read-only.
    assert!(
        image.options().split(',').any(|o| o == "ro"),
        "the host's mount stayed writable: {}",
        image.options()
    );

    // What the guest wrote is in the image (read from a fresh look at the device).
    image.unmount();
    let out = Command::new("debugfs")
        .args(["-R", "cat /from-the-guest"])
        .arg(&image.image)
        .output()
        .expect("debugfs (e2fsprogs)");
    assert_eq!(
        text(&out.stdout).trim(),
        "written-in-the-guest",
        "{}",
        text(&out.stderr)
    );
    ward.assert_nothing_left("blockroot");
}
