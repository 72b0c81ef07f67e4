//! The `start` action: which shim process serves a new container. One shim per pod: a
//! container that CRI (containerd) or CRI-O (podman) marks as a member of a pod goes to
//! the shim of its sandbox, found at the socket address derived from the sandbox's ID; a
//! sandbox, or a container with no pod (`ctr run`), gets a shim of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::StartOpts;
use thiserror::Error;

/// CRI's annotation: "sandbox" or "container".
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI's annotation naming the pod's sandbox container.
pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// CRI-O's (and podman's) spelling of the same two.
pub const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
pub const CRIO_SANDBOX_ID: &str = "io.kubernetes.cri-o.SandboxID";

/// How long an existing sandbox shim gets to answer before a new one is started.
const SANDBOX_SHIM_PROBE: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum StartError {
    #[error("container \"{id}\": reading {path}: {source}")]
    Spec {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container \"{id}\": parsing {path}: {source}")]
    SpecJson {
        id: String,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("container \"{id}\": starting the shim for group \"{group}\": {source}")]
    Spawn {
        id: String,
        group: String,
        #[source]
        source: containerd_shim::Error,
    },
    #[error("container \"{id}\": writing the shim address into the bundle: {source}")]
    Address {
        id: String,
        #[source]
        source: containerd_shim::Error,
    },
}

/// Which shim a container belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    /// A shim of its own, named after this ID (a pod sandbox's or a standalone container's).
    Own(String),
    /// The shim of this pod sandbox.
    Sandbox(String),
}

impl Group {
    /// The ID the shim's socket address is derived from.
    pub fn key(&self) -> &str {
        match self {
            Group::Own(id) | Group::Sandbox(id) => id,
        }
    }
}

/// Reads the grouping from a container's annotations.
pub fn group_of(id: &str, annotations: &HashMap<String, String>) -> Group {
    let pairs = [
        (CRI_CONTAINER_TYPE, CRI_SANDBOX_ID),
        (CRIO_CONTAINER_TYPE, CRIO_SANDBOX_ID),
    ];
    for (type_key, sandbox_key) in pairs {
        let is_member = annotations.get(type_key).map(String::as_str) == Some("container");
        let sandbox = annotations.get(sandbox_key).filter(|s| !s.is_empty());
        if let (true, Some(sandbox)) = (is_member, sandbox) {
            // A sandbox that names itself is a sandbox, whatever its type says.
            if sandbox != id {
                return Group::Sandbox(sandbox.clone());
            }
        }
    }
    Group::Own(id.to_string())
}

/// The annotations of the bundle's config.json; only they are read, so a spec that
/// `prepare` would reject still gets a shim, which reports the problem at Create.
pub fn bundle_annotations(id: &str, bundle: &Path) -> Result<HashMap<String, String>, StartError> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|source| StartError::Spec {
        id: id.to_string(),
        path: path.clone(),
        source,
    })?;
    let spec: serde_json::Value =
        serde_json::from_slice(&text).map_err(|source| StartError::SpecJson {
            id: id.to_string(),
            path: path.clone(),
            source,
        })?;
    let annotations = spec
        .get("annotations")
        .and_then(|a| a.as_object())
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(annotations)
}

/// CRI's generic runtime options: what `ConfigPath` in a containerd runtime's `options`
/// table, or `ctr run --runtime-config-path`, reaches a shim as. containerd gives them
/// to the start action on stdin.
const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";
/// Its `config_path` field.
const CONFIG_PATH_FIELD: u32 = 2;

/// The `config_path` of encoded runtime options, when set.
fn decode_config_path(bytes: &[u8]) -> Option<String> {
    use containerd_shim::protos::protobuf::rt::WireType;
    use containerd_shim::protos::protobuf::CodedInputStream;
    let mut input = CodedInputStream::from_bytes(bytes);
    while let Some(tag) = input.read_raw_tag_or_eof().ok()? {
        let (field, wire_type) = (tag >> 3, WireType::new(tag & 7)?);
        if field == CONFIG_PATH_FIELD && wire_type == WireType::LengthDelimited {
            return input.read_string().ok().filter(|p| !p.is_empty());
        }
        input.skip_field(wire_type).ok()?;
    }
    None
}

/// The ward configuration the runtime's options name, if they name one.
pub fn config_path(options: &[Any]) -> Option<PathBuf> {
    options
        .iter()
        // containerd writes bare type names; protobuf's packing prefixes a host.
        .filter(|any| any.type_url.rsplit('/').next() == Some(RUNTIME_OPTIONS_TYPE))
        .find_map(|any| decode_config_path(&any.value))
        .map(PathBuf::from)
}

/// Whether a shim already serves `address` (a `unix://` address).
fn answers(address: &str) -> bool {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    let deadline = std::time::Instant::now() + SANDBOX_SHIM_PROBE;
    loop {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return true;
        }
        if std::time::Instant::now() >= deadline || !Path::new(path).exists() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `start` action, run in the bundle directory: returns the address containerd
/// should talk to, starting a shim process when the group has none yet.
pub fn start(opts: StartOpts, bundle: &Path) -> Result<String, StartError> {
    let id = opts.id.clone();
    // The serving shim gets the runtime options' configuration as the CLI would.
    let config = config_path(&opts.extensions);
    let config_env: Vec<(&str, &str)> = config
        .as_deref()
        .and_then(Path::to_str)
        .map(|path| (crate::config::CONFIG_ENV, path))
        .into_iter()
        .collect();
    let annotations = bundle_annotations(&id, bundle)?;
    let group = group_of(&id, &annotations);
    let address = opts.socket_address(group.key());
    let address = if matches!(group, Group::Sandbox(_)) && answers(&address) {
        address
    } else {
        // The library's spawn starts `<us> -socket ADDRESS` in the serve action; when a
        // shim already listens there, that child just confirms the address and exits.
        let key = group.key().to_string();
        let (_, address) =
            containerd_shim::spawn(opts, &key, config_env).map_err(|source| StartError::Spawn {
                id: id.clone(),
                group: key,
                source,
            })?;
        address
    };
    // The serving shim reads it back at exit to remove its socket.
    containerd_shim::util::write_address(&address)
        .map_err(|source| StartError::Address { id, source })?;
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_pod_member_joins_its_sandbox_shim() {
        let cri = annotations(&[(CRI_CONTAINER_TYPE, "container"), (CRI_SANDBOX_ID, "pod1")]);
        assert_eq!(group_of("c1", &cri), Group::Sandbox("pod1".into()));
        let crio = annotations(&[
            (CRIO_CONTAINER_TYPE, "container"),
            (CRIO_SANDBOX_ID, "pod2"),
        ]);
        assert_eq!(group_of("c2", &crio), Group::Sandbox("pod2".into()));
        assert_eq!(group_of("c2", &crio).key(), "pod2");
    }

    #[test]
    fn sandboxes_and_standalone_containers_get_their_own_shim() {
        let sandbox = annotations(&[(CRI_CONTAINER_TYPE, "sandbox"), (CRI_SANDBOX_ID, "pod1")]);
        assert_eq!(group_of("pod1", &sandbox), Group::Own("pod1".into()));
        assert_eq!(group_of("solo", &HashMap::new()), Group::Own("solo".into()));
        // A member without a sandbox ID has nowhere to go but a shim of its own.
        let orphan = annotations(&[(CRI_CONTAINER_TYPE, "container"), (CRI_SANDBOX_ID, "")]);
        assert_eq!(group_of("c3", &orphan), Group::Own("c3".into()));
        let itself = annotations(&[(CRI_CONTAINER_TYPE, "container"), (CRI_SANDBOX_ID, "c4")]);
        assert_eq!(group_of("c4", &itself), Group::Own("c4".into()));
    }

    #[test]
    fn the_config_path_comes_from_cri_runtime_options() {
        use containerd_shim::protos::protobuf::CodedOutputStream;
        let mut value = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut value);
            out.write_string(1, "ignored").unwrap();
            out.write_string(CONFIG_PATH_FIELD, "/etc/ward/other.toml")
                .unwrap();
            out.flush().unwrap();
        }
        let options = |type_url: &str| Any {
            type_url: type_url.to_string(),
            value: value.clone(),
            ..Default::default()
        };
        assert_eq!(
            config_path(&[options("runtimeoptions.v1.Options")]),
            Some(PathBuf::from("/etc/ward/other.toml"))
        );
        assert_eq!(
            config_path(&[options("type.googleapis.com/runtimeoptions.v1.Options")]),
            Some(PathBuf::from("/etc/ward/other.toml"))
        );
        assert_eq!(config_path(&[options("containerd.runc.v1.Options")]), None);
        assert_eq!(config_path(&[]), None);
    }

    #[test]
    fn annotations_come_from_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":"p"}}"#,
        )
        .unwrap();
        let found = bundle_annotations("c", dir.path()).unwrap();
        assert_eq!(found.get(CRI_SANDBOX_ID).map(String::as_str), Some("p"));
        assert!(matches!(
            bundle_annotations("c", &dir.path().join("missing")),
            Err(StartError::Spec { .. })
        ));
    }
}
