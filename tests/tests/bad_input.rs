//! Bad input gets a clear error, a non-zero exit, and leaves other containers alone.

use ward_e2e::{assert_fails_with, text, Ward};

#[test]
fn bad_input_is_refused_and_harms_no_other_container() {
    let ward = Ward::new();
    let bundle = ward.start("sentinel", &["sleep", "1000"]);
    let b = bundle.to_str().unwrap();

    // Unknown IDs, for every command that takes one.
    for command in [
        &["state", "nope"][..],
        &["start", "nope"],
        &["kill", "nope"],
        &["delete", "nope"],
    ] {
        assert_fails_with(&ward.run(command), "container \"nope\" does not exist");
    }
    // IDs that cannot name a directory. (A NUL cannot reach us through argv; the ID
    // validator's unit tests cover it.)
    assert_fails_with(&ward.run(&["create", "--bundle", b, "a/b"]), "contains '/'");
    assert_fails_with(&ward.run(&["create", "--bundle", b, ".."]), "'..'");
    let long = "x".repeat(1025);
    assert_fails_with(
        &ward.run(&["create", "--bundle", b, &long]),
        "longer than 1024",
    );
    assert_fails_with(&ward.run(&["state", "../sentinel"]), "invalid container ID");

    // A duplicate ID.
    assert_fails_with(
        &ward.run(&["create", "--bundle", b, "sentinel"]),
        "container with id exists: sentinel",
    );

    // Bundles: missing, without config.json, malformed JSON (with where), missing rootfs.
    let missing = ward.dir.path().join("no-such-bundle");
    assert_fails_with(
        &ward.run(&["create", "--bundle", missing.to_str().unwrap(), "c1"]),
        "does not exist",
    );
    let empty = ward.dir.path().join("empty-bundle");
    std::fs::create_dir_all(&empty).unwrap();
    assert_fails_with(
        &ward.run(&["create", "--bundle", empty.to_str().unwrap(), "c2"]),
        "config.json does not exist",
    );
    let malformed = ward.dir.path().join("malformed-bundle");
    std::fs::create_dir_all(malformed.join("rootfs")).unwrap();
    std::fs::write(
        malformed.join("config.json"),
        "{\n  \"ociVersion\": \"1.0.2\",\n  \"process\": {,\n}\n",
    )
    .unwrap();
    assert_fails_with(
        &ward.run(&["create", "--bundle", malformed.to_str().unwrap(), "c3"]),
        "line 3",
    );

    // Missing guest assets: the error says how to build them.
    let no_kernel = ward.config_with("no-kernel.toml", "");
    let text_config = std::fs::read_to_string(&no_kernel).unwrap();
    std::fs::write(
        &no_kernel,
        text_config.replace("vmlinux", "no-such-vmlinux"),
    )
    .unwrap();
    assert_fails_with(
        &ward.run_with_config(&no_kernel, &["create", "--bundle", b, "c4"]),
        "make assets",
    );
    let no_initrd = ward.config_with("no-initrd.toml", "");
    let text_config = std::fs::read_to_string(&no_initrd).unwrap();
    std::fs::write(
        &no_initrd,
        text_config.replace("initrd.img", "no-such-initrd.img"),
    )
    .unwrap();
    assert_fails_with(
        &ward.run_with_config(&no_initrd, &["create", "--bundle", b, "c5"]),
        "make assets",
    );

    // QEMU missing.
    let no_qemu = ward.config_with(
        "no-qemu.toml",
        "[hypervisor.qemu]\nbinary = \"/nonexistent/qemu-system-x86_64\"",
    );
    assert_fails_with(
        &ward.run_with_config(&no_qemu, &["create", "--bundle", b, "c6"]),
        "qemu",
    );

    // A configuration file that WARD_CONFIG names but does not exist.
    let absent = ward.dir.path().join("absent.toml");
    assert_fails_with(
        &ward.run_with_config(&absent, &["state", "sentinel"]),
        "does not exist",
    );

    // A VM that dies during boot: no init to run, the kernel panics; the error shows the
    // console's last lines.
    let dying = ward.config_with("dying.toml", "");
    let text_config = std::fs::read_to_string(&dying).unwrap();
    std::fs::write(
        &dying,
        text_config.replace(
            "[guest]",
            "[guest]\nkernel_params = \"rdinit=/no-such-init\"",
        ),
    )
    .unwrap();
    let out = ward.run_with_config(&dying, &["create", "--bundle", b, "c7"]);
    assert_fails_with(&out, "exited while booting");
    assert!(
        text(&out.stderr).contains("Kernel panic") || text(&out.stderr).contains("init"),
        "the console tail explains the death: {}",
        text(&out.stderr)
    );

    // Wrong state transitions.
    assert_fails_with(&ward.run(&["start", "sentinel"]), "it is running");

    // None of the failures left state behind, and the sentinel is untouched.
    for id in ["c1", "c2", "c3", "c4", "c5", "c6", "c7", "a"] {
        assert!(!ward.root.join(id).exists(), "{id} left state behind");
    }
    assert_eq!(ward.state("sentinel")["status"], "running");
    let out = ward.run(&["delete", "--force", "sentinel"]);
    assert!(
        out.status.success(),
        "delete --force: {}",
        text(&out.stderr)
    );
    assert!(!ward.root.join("sentinel").exists());
}
