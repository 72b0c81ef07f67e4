//! Fuzzes what the agent does with a container's OCI spec from the host (CreateContainer):
//! `parse_spec`, then `init_plan`, which turns it into namespaces, mounts, devices, cgroup
//! limits, users and the command. A spec is host input, but it is what a compromised
//! runtime or engine controls; nothing in it may crash the guest's PID 1.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ward_agent::container::plan::{init_plan, parse_spec};

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = parse_spec(data) else {
        return;
    };
    // A root with no /etc/passwd: the plan must not depend on finding one.
    if let Ok(plan) = init_plan("fuzz", &spec, Path::new("/nonexistent/ward-fuzz-rootfs")) {
        // What the plan keeps from the spec stays under the container's cgroup.
        assert!(plan
            .rootfs
            .cgroup_dir
            .starts_with(ward_agent::container::cgroup::CGROUP_ROOT));
    }
});
