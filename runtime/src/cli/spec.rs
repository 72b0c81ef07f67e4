//! `ward spec [--bundle B] [--rootless]`: writes a starting config.json, as runc does.

use crate::cli::CliError;

pub fn execute(args: &liboci_cli::Spec) -> Result<i32, CliError> {
    let dir = args
        .bundle
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    let path = dir.join("config.json");
    if path.exists() {
        return Err(CliError::Usage(format!(
            "file {} exists: remove it first",
            path.display()
        )));
    }
    let spec = if args.rootless {
        oci_spec::runtime::Spec::rootless(
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    } else {
        oci_spec::runtime::Spec::default()
    };
    let text = serde_json::to_string_pretty(&spec).map_err(|e| CliError::Io {
        what: "formatting the spec".into(),
        source: e.into(),
    })?;
    std::fs::write(&path, text + "\n").map_err(|source| CliError::Io {
        what: format!("writing {}", path.display()),
        source,
    })?;
    Ok(0)
}
