//! What a hostile guest can leave on the host through its shares (issue 14): QEMU, the
//! file server here, may not make device nodes or file capabilities; every share mount is
//! nosuid and nodev; read-only shares (root.readonly, ro volumes) are read-only on the
//! host all the way down, submounts included.

use std::path::Path;
use std::time::Duration;

use ward_e2e::{mounts_mentioning, sandbox_processes, status_fields, text, Ward};

/// The options field (6th) of a mountinfo line.
fn mount_options(line: &str) -> Vec<String> {
    line.split(' ')
        .nth(5)
        .unwrap_or("")
        .split(',')
        .map(str::to_string)
        .collect()
}

/// The mountinfo lines of the sandbox `id`'s shared directory.
fn share_mounts(ward: &Ward, id: &str) -> Vec<String> {
    let dir = ward_e2e::engines::sandbox_dir(&ward.root, id).join("shared");
    mounts_mentioning(&format!(" {} ", dir.display()))
        .into_iter()
        .chain(mounts_mentioning(&format!("{}/", dir.display())))
        .collect()
}

fn edit_spec(bundle: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config.json")).expect("json");
    edit(&mut spec);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
}

fn stop_and_delete(ward: &Ward, id: &str) {
    let out = ward.run(&["delete", "--force", id]);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
    ward.assert_nothing_left(id);
}

#[test]
fn no_device_nodes_and_nosuid_nodev_shares() {
    let ward = Ward::new();
    let bundle = ward.start("nodev", &["sleep", "1000"]);

    let qemu = sandbox_processes(&ward, "nodev", "qemu-system-x86_64");
    assert_eq!(qemu.len(), 1, "one QEMU: {qemu:?}");
    let status = status_fields(&format!("/proc/{}/status", qemu[0]));
    // CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER, FSETID: what 9p passthrough needs.
    for set in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(
            status.get(set).map(String::as_str),
            Some("000000000000001f"),
            "QEMU's {set}"
        );
    }

    // Through the 9p share, as guest root: no device node, whatever the guest's
    // capabilities (QEMU itself may not make one).
    let out = ward.run(&["exec", "nodev", "mknod", "/escape", "c", "1", "3"]);
    assert!(!out.status.success(), "mknod of a char device worked");
    assert!(
        text(&out.stderr).contains("Operation not permitted"),
        "mknod failed otherwise: {}",
        text(&out.stderr)
    );
    assert!(
        !bundle.join("rootfs/escape").exists(),
        "a device node reached the host's rootfs"
    );

    let mounts = share_mounts(&ward, "nodev");
    assert!(
        mounts.len() >= 2,
        "the export and the rootfs at least: {mounts:?}"
    );
    for line in &mounts {
        let options = mount_options(line);
        assert!(
            options.iter().any(|o| o == "nosuid") && options.iter().any(|o| o == "nodev"),
            "a share mount without nosuid,nodev: {line}"
        );
    }
    stop_and_delete(&ward, "nodev");
}

#[test]
fn read_only_root_and_volumes_are_read_only_on_the_host_with_their_submounts() {
    let ward = Ward::new();
    let bundle = ward.bundle("ro", &["sleep", "1000"]);
    // A volume with a submount: a remount of the bind alone would leave `sub` writable.
    let volume = bundle.join("volume");
    std::fs::create_dir_all(volume.join("sub")).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &volume.join("sub"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .expect("tmpfs on the volume's submount");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let sub = volume.join("sub");
    let _unmount = Unmount(&sub);
    edit_spec(&bundle, |spec| {
        spec["root"]["readonly"] = true.into();
        let mounts = spec["mounts"].as_array_mut().expect("mounts");
        mounts.push(serde_json::json!({
            "destination": "/vol",
            "type": "bind",
            "source": volume,
            "options": ["rbind", "ro"],
        }));
        // Its mount point is not in busybox's rootfs: ward makes it before sharing.
        mounts.push(serde_json::json!({
            "destination": "/scratch/space",
            "type": "tmpfs",
            "source": "tmpfs",
        }));
    });
    let out = ward.run_detached(&[
        "run",
        "--detach",
        "--bundle",
        bundle.to_str().unwrap(),
        "ro",
    ]);
    assert!(out.status.success(), "run: {}", text(&out.stderr));
    ward.wait_status("ro", "running", Duration::from_secs(60));
    assert!(bundle.join("rootfs/scratch/space").is_dir());

    let out = ward.run(&[
        "exec",
        "ro",
        "sh",
        "-c",
        "touch /x; echo root $?; touch /vol/sub/y; echo sub $?; touch /scratch/space/z; echo tmpfs $?",
    ]);
    let said = text(&out.stdout);
    assert!(said.contains("tmpfs 0"), "{said}");
    assert!(
        !said.contains("root 0") && !said.contains("sub 0"),
        "{said}"
    );

    let mounts = share_mounts(&ward, "ro");
    let rootfs = mounts
        .iter()
        .find(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|t| t.ends_with("/ro/rootfs"))
        })
        .unwrap_or_else(|| panic!("the rootfs share: {mounts:?}"));
    assert!(
        mount_options(rootfs).contains(&"ro".to_string()),
        "{rootfs}"
    );
    let sub = mounts
        .iter()
        .find(|l| l.split(' ').nth(4).is_some_and(|t| t.ends_with("/sub")))
        .unwrap_or_else(|| panic!("the volume's submount: {mounts:?}"));
    assert!(mount_options(sub).contains(&"ro".to_string()), "{sub}");
    stop_and_delete(&ward, "ro");
}
