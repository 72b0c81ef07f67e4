//! tools/kernel/progress.sh, the ticker of tools/build-guest-kernel: a long step reports
//! what it is doing at least every interval, and the ticker ends with the step. Tested on
//! a fake kbuild log rather than a kernel build (minutes, and a shared cache).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_long_step_reports_progress_and_the_ticker_ends_with_it() {
    let helper = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .join("tools/kernel/progress.sh");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("build.log");
    // A "build" writing kbuild's short lines for about 3.5 s, with a 1 s interval.
    let script = format!(
        r#"set -euo pipefail
PROG=test-build
. {helper}
progress_start compiling {log}
for i in 1 2 3 4 5 6 7; do echo "  CC      kernel/obj$i.o" >> {log}; sleep 0.5; done
progress_stop
ps -o pid= --ppid $$; true"#,
        helper = helper.display(),
        log = log.display()
    );
    let started = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("WARD_PROGRESS_INTERVAL", "1")
        .output()
        .expect("running bash");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ticks: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("[test-build] compiling: "))
        .collect();
    assert!(ticks.len() >= 2, "at least one line a second: {stderr}");
    assert!(
        ticks
            .iter()
            .all(|l| l.contains("steps done, last: CC kernel/obj")),
        "{ticks:?}"
    );
    assert!(
        elapsed < Duration::from_secs(6),
        "stopping the ticker does not wait out its interval: {elapsed:?}"
    );
    // The ticker is gone: the `ps` of the last line is the shell's only child.
    let children = String::from_utf8_lossy(&out.stdout);
    assert_eq!(children.lines().count(), 1, "children left: {children}");
}
