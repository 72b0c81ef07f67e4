//! `containerd-shim-ward-v2`: containerd's shim v2 for ward (`io.containerd.ward.v2`).
//! Everything is in `ward_runtime::shim`; the containerd-shim library parses the
//! command line and runs the action.

fn main() {
    containerd_shim::run::<ward_runtime::shim::WardShim>(
        ward_runtime::shim::RUNTIME_ID,
        Some(ward_runtime::shim::library_config()),
    );
}
