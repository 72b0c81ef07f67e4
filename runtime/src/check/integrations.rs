//! Container engines: whether each installed one is configured to run ward, and if not,
//! the exact configuration to add.

use std::path::{Path, PathBuf};

use super::report::Item;

/// One engine's view: installed at all, and its configuration files that exist (path,
/// text). A file that exists but cannot be read is given as Err.
#[derive(Debug, Clone)]
pub struct Engine {
    pub installed: bool,
    pub configs: Vec<(PathBuf, Result<String, String>)>,
}

/// Any table in `value` (at any depth) for which `pred` holds.
fn any_table(value: &toml::Value, pred: &dyn Fn(&toml::Table) -> bool) -> bool {
    match value {
        toml::Value::Table(t) => pred(t) || t.values().any(|v| any_table(v, pred)),
        toml::Value::Array(a) => a.iter().any(|v| any_table(v, pred)),
        _ => false,
    }
}

fn is_ward_binary(s: &str) -> bool {
    Path::new(s).file_name().is_some_and(|n| n == "ward")
}

/// containerd names ward as a runtime: a `io.containerd.ward.v2` runtime type, or a
/// runtime whose options' BinaryName is ward.
pub fn containerd_names_ward(config: &toml::Value) -> bool {
    any_table(config, &|t| {
        t.get("runtime_type").and_then(|v| v.as_str()) == Some("io.containerd.ward.v2")
            || t.get("BinaryName")
                .and_then(|v| v.as_str())
                .is_some_and(is_ward_binary)
    })
}

/// containers.conf has `[engine.runtimes]` with a `ward` entry.
pub fn podman_names_ward(config: &toml::Value) -> bool {
    config
        .get("engine")
        .and_then(|e| e.get("runtimes"))
        .and_then(|r| r.get("ward"))
        .is_some()
}

/// crio.conf (or a drop-in) has `[crio.runtime.runtimes.ward]`.
pub fn crio_names_ward(config: &toml::Value) -> bool {
    config
        .get("crio")
        .and_then(|c| c.get("runtime"))
        .and_then(|r| r.get("runtimes"))
        .and_then(|r| r.get("ward"))
        .is_some()
}

fn engine_item(
    id: &str,
    name: &str,
    engine: &Engine,
    names_ward: fn(&toml::Value) -> bool,
    where_to: &str,
    snippet: String,
) -> Item {
    if !engine.installed {
        return Item::pass(id, format!("{name} not installed"));
    }
    let mut unreadable = Vec::new();
    for (path, text) in &engine.configs {
        match text.as_ref().map(|t| t.parse::<toml::Value>()) {
            Ok(Ok(value)) if names_ward(&value) => {
                return Item::pass(id, format!("{name}: {} names ward", path.display()));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => unreadable.push(format!("{}: {}", path.display(), e.message())),
            Err(e) => unreadable.push(format!("{}: {e}", path.display())),
        }
    }
    let mut item = Item::warn(
        id,
        format!("{name} is installed but not configured to run ward"),
        format!("add to {where_to}:\n{snippet}"),
    );
    for (path, _) in &engine.configs {
        item = item.detail(format!("read {}", path.display()));
    }
    for why in unreadable {
        item = item.detail(format!("cannot parse {why}"));
    }
    item
}

/// `ward`: the path engines should run (this binary).
pub fn check(containerd: &Engine, podman: &Engine, crio: &Engine, ward: &Path) -> Vec<Item> {
    let ward = ward.display();
    vec![
        engine_item(
            "integrations.containerd",
            "containerd",
            containerd,
            containerd_names_ward,
            "/etc/containerd/config.toml (then restart containerd)",
            format!(
                "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.ward]\n  \
                 runtime_type = \"io.containerd.runc.v2\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.ward.options]\n  \
                 BinaryName = \"{ward}\""
            ),
        ),
        engine_item(
            "integrations.podman",
            "podman",
            podman,
            podman_names_ward,
            "/etc/containers/containers.conf (use it with `podman --runtime ward`)",
            format!("[engine.runtimes]\nward = [\"{ward}\"]"),
        ),
        engine_item(
            "integrations.crio",
            "CRI-O",
            crio,
            crio_names_ward,
            "/etc/crio/crio.conf.d/50-ward.conf (then restart crio)",
            format!(
                "[crio.runtime.runtimes.ward]\nruntime_path = \"{ward}\"\nruntime_type = \"oci\""
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::Status;

    fn engine(files: &[(&str, &str)]) -> Engine {
        Engine {
            installed: true,
            configs: files
                .iter()
                .map(|(p, t)| (PathBuf::from(p), Ok(t.to_string())))
                .collect(),
        }
    }

    fn none() -> Engine {
        Engine {
            installed: false,
            configs: vec![],
        }
    }

    fn ward() -> PathBuf {
        PathBuf::from("/usr/local/bin/ward")
    }

    #[test]
    fn containerd_with_and_without_ward() {
        let with = engine(&[(
            "/etc/containerd/config.toml",
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.ward]\nruntime_type = \"io.containerd.runc.v2\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.ward.options]\nBinaryName = \"/usr/local/bin/ward\"\n",
        )]);
        assert_eq!(
            check(&with, &none(), &none(), &ward())[0].status,
            Status::Pass
        );
        let shim = engine(&[(
            "/c",
            "[x.runtimes.w]\nruntime_type = \"io.containerd.ward.v2\"\n",
        )]);
        assert_eq!(
            check(&shim, &none(), &none(), &ward())[0].status,
            Status::Pass
        );
        let without = engine(&[(
            "/etc/containerd/config.toml",
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\nBinaryName = \"/usr/bin/runc\"\n",
        )]);
        let item = &check(&without, &none(), &none(), &ward())[0];
        assert_eq!(item.status, Status::Warn);
        let hint = item.hint.as_deref().unwrap();
        assert!(
            hint.contains("BinaryName = \"/usr/local/bin/ward\""),
            "{hint}"
        );
        // The snippet itself must satisfy the check.
        let snippet = hint.split_once('\n').unwrap().1;
        let fixed = engine(&[("/etc/containerd/config.toml", snippet)]);
        assert_eq!(
            check(&fixed, &none(), &none(), &ward())[0].status,
            Status::Pass
        );
    }

    #[test]
    fn podman_with_and_without_ward() {
        let with = engine(&[
            (
                "/usr/share/containers/containers.conf",
                "[engine]\ncgroup_manager = \"cgroupfs\"\n",
            ),
            (
                "/etc/containers/containers.conf",
                "[engine.runtimes]\nward = [\"/usr/local/bin/ward\"]\n",
            ),
        ]);
        assert_eq!(
            check(&none(), &with, &none(), &ward())[1].status,
            Status::Pass
        );
        let without = engine(&[(
            "/etc/containers/containers.conf",
            "[engine.runtimes]\nrunc = [\"/usr/bin/runc\"]\n",
        )]);
        let item = &check(&none(), &without, &none(), &ward())[1];
        assert_eq!(item.status, Status::Warn);
        let snippet = item.hint.as_deref().unwrap().split_once('\n').unwrap().1;
        let fixed = engine(&[("/etc/containers/containers.conf", snippet)]);
        assert_eq!(
            check(&none(), &fixed, &none(), &ward())[1].status,
            Status::Pass
        );
    }

    #[test]
    fn crio_and_engines_not_installed() {
        let items = check(&none(), &none(), &none(), &ward());
        assert!(items.iter().all(|i| i.status == Status::Pass));
        assert!(items[2].message.contains("not installed"));
        let with = engine(&[(
            "/etc/crio/crio.conf.d/50-ward.conf",
            "[crio.runtime.runtimes.ward]\nruntime_path = \"/usr/local/bin/ward\"\n",
        )]);
        assert_eq!(
            check(&none(), &none(), &with, &ward())[2].status,
            Status::Pass
        );
        let broken = engine(&[("/etc/crio/crio.conf", "[[[ nonsense")]);
        let item = &check(&none(), &none(), &broken, &ward())[2];
        assert_eq!(item.status, Status::Warn);
        assert!(item.details.iter().any(|d| d.contains("cannot parse")));
    }
}
