//! `ward env`: the configuration ward resolved, where it came from, and the guest assets.

use clap::Args;
use serde::Serialize;

use super::CliError;
use crate::config::Config;
use crate::container::Context;

#[derive(Debug, Args)]
pub struct Env {
    /// Print JSON instead of TOML
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Asset {
    path: String,
    present: bool,
}

#[derive(Serialize)]
struct Assets {
    kernel: Asset,
    initrd: Asset,
    kernel_hash: Asset,
}

fn asset(path: &std::path::Path) -> Asset {
    Asset {
        path: path.display().to_string(),
        present: path.is_file(),
    }
}

fn assets(config: &Config) -> Assets {
    Assets {
        kernel: asset(&config.guest.kernel),
        initrd: asset(&config.guest.initrd),
        kernel_hash: asset(&config.guest.kernel.with_file_name("kernel.hash")),
    }
}

fn source(config: &Config) -> String {
    config
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "built-in defaults".to_string())
}

/// The text `ward env` prints for `config`.
pub fn render(config: &Config, json: bool) -> Result<String, CliError> {
    let assets = assets(config);
    if json {
        let doc = serde_json::json!({
            "source": source(config),
            "config": config,
            "assets": assets,
        });
        return serde_json::to_string_pretty(&doc)
            .map_err(|e| CliError::Usage(format!("cannot render the configuration: {e}")));
    }
    let body = toml::to_string(config)
        .map_err(|e| CliError::Usage(format!("cannot render the configuration: {e}")))?;
    let state = |a: &Asset| if a.present { "present" } else { "missing" };
    Ok(format!(
        "# configuration: {}\n# kernel:      {} ({})\n# initrd:      {} ({})\n# kernel.hash: {} ({})\n\n{body}",
        source(config),
        assets.kernel.path,
        state(&assets.kernel),
        assets.initrd.path,
        state(&assets.initrd),
        assets.kernel_hash.path,
        state(&assets.kernel_hash),
    ))
}

pub fn execute(ctx: &Context, args: &Env) -> Result<i32, CliError> {
    print!("{}", render(&ctx.config, args.json)?);
    if args.json {
        println!();
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_render_as_toml_that_reads_back() {
        let text = render(&Config::default(), false).unwrap();
        assert!(
            text.starts_with("# configuration: built-in defaults"),
            "{text}"
        );
        assert!(text.contains("/usr/share/ward/vmlinux"), "{text}");
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let back: Config = toml::from_str(&body).unwrap();
        assert_eq!(back, Config::default());
    }

    #[test]
    fn json_names_the_source_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[guest]\nkernel = \"/k/vmlinux\"\n").unwrap();
        let config = Config::from_file(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&render(&config, true).unwrap()).unwrap();
        assert_eq!(v["source"], path.display().to_string());
        assert_eq!(v["assets"]["kernel"]["path"], "/k/vmlinux");
        assert_eq!(v["assets"]["kernel"]["present"], false);
        assert_eq!(v["config"]["guest"]["memory_mib"], 256);
    }
}
