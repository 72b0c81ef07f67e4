//! `containerd-shim-ward-v2`: containerd's shim v2 for ward (`io.containerd.ward.v2`).
//! Everything is in `ward_runtime::shim`: the containerd-shim library runs the start,
//! delete and info actions, ward's own serve the long-lived shim.

fn main() {
    let args: Vec<_> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("{}: {e}", ward_runtime::shim::RUNTIME_ID);
            std::process::exit(1);
        }
    };
    if flags.action.is_empty() && !flags.info && !flags.version {
        if let Err(e) = ward_runtime::shim::serve::serve(&flags) {
            eprintln!("{}: {e}", ward_runtime::shim::RUNTIME_ID);
            std::process::exit(1);
        }
        return;
    }
    containerd_shim::run::<ward_runtime::shim::WardShim>(
        ward_runtime::shim::RUNTIME_ID,
        Some(ward_runtime::shim::library_config()),
    );
}
