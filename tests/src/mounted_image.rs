//! Block-device file systems for the tests: an ext4 image of a directory, on a loop
//! device, mounted where a test wants it (a bundle's rootfs, as a devmapper snapshotter
//! would hand one over).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::text;

/// An ext4 image of `files` on a loop device mounted at `at`; undone on drop.
pub struct MountedImage {
    pub at: PathBuf,
    pub device: String,
    pub image: PathBuf,
}

impl MountedImage {
    pub fn new(files: &Path, image: PathBuf, at: &Path) -> MountedImage {
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "wardroot", "-d"])
            .arg(files)
            .arg(&image)
            .arg("64M")
            .output()
            .expect("mkfs.ext4 (apt-get install e2fsprogs)");
        assert!(out.status.success(), "mkfs.ext4: {}", text(&out.stderr));
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .output()
            .expect("losetup (apt-get install mount)");
        assert!(out.status.success(), "losetup: {}", text(&out.stderr));
        let device = text(&out.stdout).trim().to_string();
        let mounted = MountedImage {
            at: at.to_path_buf(),
            device,
            image,
        };
        std::fs::create_dir_all(at).expect("the mount point");
        let out = Command::new("mount")
            .args(["-t", "ext4", &mounted.device])
            .arg(at)
            .output()
            .expect("mount");
        assert!(out.status.success(), "mount: {}", text(&out.stderr));
        mounted
    }

    /// The mount's options as the host's mountinfo has them.
    pub fn options(&self) -> String {
        let wanted = self.at.to_string_lossy().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .rev()
            .find(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
            .and_then(|l| l.split(' ').nth(5).map(str::to_string))
            .unwrap_or_default()
    }

    pub fn unmount(&self) {
        let _ = Command::new("umount")
            .arg(&self.at)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for MountedImage {
    fn drop(&mut self) {
        self.unmount();
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// What the guest's `/` is, from a `grep ' / ' /proc/mounts` line: true for an ext4
/// file system on a virtio disk.
pub fn is_disk_root(line: &str) -> bool {
    line.starts_with("/dev/vd") && line.contains(" / ext4 ")
}
