//! `make install-files` / `make uninstall` into a DESTDIR: the files land where ward's
//! built-in defaults look, a configuration someone wrote is kept, and the installed tree
//! passes `ward check`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ward_e2e::{text, Ward};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn make(target: &str, destdir: &Path, bin_dir: &Path) -> std::process::Output {
    Command::new("make")
        .arg("-C")
        .arg(repo_root())
        .arg(target)
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg("PREFIX=/usr")
        .arg(format!("INSTALL_BIN_DIR={}", bin_dir.display()))
        .output()
        .expect("running make")
}

const INSTALLED: [&str; 9] = [
    "usr/bin/ward",
    "usr/bin/ward-vmm",
    "usr/bin/containerd-shim-ward-v2",
    "usr/share/ward/vmlinux",
    "usr/share/ward/initrd.img",
    "usr/share/ward/kernel.hash",
    "usr/share/doc/ward/README.md",
    "usr/share/doc/ward/configuration.toml.example",
    "etc/ward/configuration.toml",
];

#[test]
fn install_into_a_destdir_then_uninstall() {
    let ward = Ward::new();
    let bin_dir = ward.bin.parent().expect("WARD_BIN has a directory");
    assert!(
        bin_dir.join("ward-vmm").exists(),
        "ward-vmm is built beside {} (make build)",
        ward.bin.display()
    );
    let dest = ward.dir.path().join("destdir");

    let out = make("install-files", &dest, bin_dir);
    assert!(
        out.status.success(),
        "make install-files: {}",
        text(&out.stderr)
    );
    for file in INSTALLED {
        assert!(dest.join(file).is_file(), "{file} is not installed");
    }
    let config = std::fs::read_to_string(dest.join("etc/ward/configuration.toml")).unwrap();
    assert!(
        config.contains("kernel = \"/usr/share/ward/vmlinux\"")
            && config.contains("initrd = \"/usr/share/ward/initrd.img\""),
        "{config}"
    );

    // The installed tree works: its ward checks its own assets (the configuration moved
    // under DESTDIR, as the files are) and finds ward-vmm beside itself.
    let staged = ward.dir.path().join("staged.toml");
    std::fs::write(
        &staged,
        config.replace("/usr/share", &format!("{}/usr/share", dest.display())),
    )
    .unwrap();
    let out = Command::new(dest.join("usr/bin/ward"))
        .arg("--config")
        .arg(&staged)
        .args(["check", "--json"])
        .output()
        .expect("running the installed ward");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("ward check --json prints JSON");
    assert!(out.status.success(), "installed ward check: {report}");
    for item in report["items"].as_array().unwrap() {
        assert_ne!(item["status"], "fail", "{item}");
        // (assets.kernel-config may warn: it compares with the checkout's current hash.)
        if ["assets.kernel", "assets.initrd", "assets.agent"]
            .contains(&item["id"].as_str().unwrap_or_default())
        {
            assert_eq!(item["status"], "pass", "{item}");
        }
    }

    // A configuration someone changed survives both a reinstall and an uninstall.
    let mine = "[guest]\nmemory_mib = 512\n";
    std::fs::write(dest.join("etc/ward/configuration.toml"), mine).unwrap();
    let out = make("install-files", &dest, bin_dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("kept the existing"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/ward/configuration.toml")).unwrap(),
        mine
    );
    let out = make("uninstall", &dest, bin_dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for file in INSTALLED.iter().filter(|f| !f.starts_with("etc/")) {
        assert!(!dest.join(file).exists(), "{file} is left after uninstall");
    }
    assert!(dest.join("etc/ward/configuration.toml").exists());

    // An untouched one goes with the rest.
    std::fs::remove_file(dest.join("etc/ward/configuration.toml")).unwrap();
    assert!(make("install-files", &dest, bin_dir).status.success());
    assert!(make("uninstall", &dest, bin_dir).status.success());
    assert!(
        !dest.join("etc/ward").exists(),
        "etc/ward is left after uninstall"
    );
    assert!(!dest.join("usr/share/ward").exists());
}
