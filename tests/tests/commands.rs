//! The informational commands engines call: list, spec, features.

use std::time::Duration;

use ward_e2e::{assert_fails_with, text, Ward};

#[test]
fn version_prints_runcs_shape() {
    let ward = Ward::new();
    for args in [&["--version"][..], &["version"][..], &["-v"][..]] {
        let out = ward.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let shown = text(&out.stdout);
        let first = shown.lines().next().unwrap_or_default();
        assert!(first.starts_with("ward version "), "{args:?}: {shown}");
        assert!(shown.lines().any(|l| l.starts_with("spec: ")), "{shown}");
    }
}

#[test]
fn list_shows_containers_in_runc_formats() {
    let ward = Ward::new();
    let out = ward.run(&["list", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "[]", "no root yet: an empty list");

    ward.start("listed", &["sleep", "1000"]);

    let out = ward.run(&["list"]);
    let table = text(&out.stdout);
    assert!(table.starts_with("ID"), "{table}");
    let row = table.lines().nth(1).expect("one row");
    assert!(
        row.starts_with("listed") && row.contains("running"),
        "{row}"
    );

    let out = ward.run(&["list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(list[0]["id"], "listed");
    assert_eq!(list[0]["status"], "running");
    assert_eq!(list[0]["pid"], ward.state("listed")["pid"]);

    let out = ward.run(&["list", "-q"]);
    assert_eq!(text(&out.stdout), "listed\n");
    assert_fails_with(&ward.run(&["list", "--format", "yaml"]), "invalid format");

    let out = ward.run(&["kill", "listed", "KILL"]);
    assert!(out.status.success());
    ward.wait_status("listed", "stopped", Duration::from_secs(60));
    let out = ward.run(&["delete", "listed"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&ward.run(&["list", "-q"]).stdout), "");
}

#[test]
fn spec_writes_a_config_once_and_features_are_oci_json() {
    let ward = Ward::new();
    let dir = ward.dir.path().join("new-bundle");
    std::fs::create_dir_all(&dir).unwrap();
    let out = ward.run(&["spec", "--bundle", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["root"]["path"], "rootfs");
    assert_fails_with(
        &ward.run(&["spec", "--bundle", dir.to_str().unwrap()]),
        "exists",
    );

    let out = ward.run(&["features"]);
    assert!(out.status.success());
    let features: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(features["linux"]["cgroup"]["v2"], true);
    assert!(features["mountOptions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o == "rbind"));
}
