//! pause and resume freeze and thaw the container's processes in the guest; ps lists them.

use std::time::Duration;

use ward_e2e::{assert_fails_with, text, Ward};

fn ticks(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn pause_freezes_resume_thaws_and_ps_lists() {
    let ward = Ward::new();
    // The rootfs is shared with the host, so the host can watch the ticks being written.
    let bundle = ward.start(
        "ticker",
        &[
            "sh",
            "-c",
            "while true; do echo tick >> /ticks; sleep 0.1; done",
        ],
    );
    let tick_file = bundle.join("rootfs/ticks");

    let out = ward.run(&["ps", "--format", "json", "ticker"]);
    assert!(out.status.success(), "ps: {}", text(&out.stderr));
    let pids: Vec<i64> = serde_json::from_slice(&out.stdout).expect("a JSON array of PIDs");
    assert!(!pids.is_empty());
    let out = ward.run(&["ps", "ticker"]);
    assert!(
        text(&out.stdout).contains("while true"),
        "{}",
        text(&out.stdout)
    );

    assert_fails_with(&ward.run(&["resume", "ticker"]), "it is running");
    let out = ward.run(&["pause", "ticker"]);
    assert!(out.status.success(), "pause: {}", text(&out.stderr));
    assert_eq!(ward.state("ticker")["status"], "paused");
    let frozen_at = ticks(&tick_file);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ticks(&tick_file), frozen_at, "a paused container wrote on");
    assert_fails_with(&ward.run(&["exec", "ticker", "true"]), "it is paused");
    assert_fails_with(&ward.run(&["delete", "ticker"]), "not stopped");

    let out = ward.run(&["resume", "ticker"]);
    assert!(out.status.success(), "resume: {}", text(&out.stderr));
    assert_eq!(ward.state("ticker")["status"], "running");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ticks(&tick_file) <= frozen_at && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        ticks(&tick_file) > frozen_at,
        "a resumed container did not go on"
    );

    assert_fails_with(&ward.run(&["pause", "nope"]), "does not exist");
    let out = ward.run(&["delete", "--force", "ticker"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
