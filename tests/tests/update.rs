//! update applies limits in the guest's cgroup; events --stats reads them back, runc-shaped.

use std::io::Write;

use ward_e2e::{assert_fails_with, text, Ward};

fn stats(ward: &Ward, id: &str) -> serde_json::Value {
    let out = ward.run(&["events", "--stats", id]);
    assert!(out.status.success(), "events: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON event")
}

#[test]
fn update_sets_limits_that_events_report() {
    let ward = Ward::new();
    ward.start("limited", &["sleep", "1000"]);

    let event = stats(&ward, "limited");
    assert_eq!(event["type"], "stats");
    assert_eq!(event["id"], "limited");
    assert!(event["data"]["pids"]["current"].as_u64().unwrap() >= 1);
    assert!(event["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0);
    assert!(event["data"]["cpu"]["usage"]["total"].is_u64());

    let out = ward.run(&[
        "update",
        "--memory",
        "104857600",
        "--pids-limit",
        "50",
        "limited",
    ]);
    assert!(out.status.success(), "update: {}", text(&out.stderr));
    let event = stats(&ward, "limited");
    assert_eq!(event["data"]["pids"]["limit"], 50);
    assert_eq!(event["data"]["memory"]["usage"]["limit"], 104857600u64);

    // -r - reads an OCI linux.resources object from stdin, as engines send it.
    let mut child = ward
        .command()
        .args(["update", "-r", "-", "limited"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ward update");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(br#"{"pids": {"limit": 20}, "cpu": {"quota": 50000, "period": 100000}}"#)
        .expect("write resources");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "update -r -: {}", text(&out.stderr));
    assert_eq!(stats(&ward, "limited")["data"]["pids"]["limit"], 20);

    let bad = ward.dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    assert_fails_with(
        &ward.run(&["update", "-r", bad.to_str().unwrap(), "limited"]),
        "malformed resources",
    );
    assert_fails_with(&ward.run(&["events", "--stats", "nope"]), "does not exist");

    let out = ward.run(&["delete", "--force", "limited"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
