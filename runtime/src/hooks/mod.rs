//! OCI hooks that run on the host (runtime-spec 1.1, config.md "POSIX-platform Hooks"):
//! prestart and createRuntime while `create` builds the container, poststart once `start`
//! has started its process, poststop once `delete` has removed it. Each hook gets the
//! container's state on stdin, runs in the order the spec lists it, and is killed at its
//! timeout. A failing prestart or createRuntime hook fails the create (the caller tears
//! the container down); a failing poststart or poststop hook is a warning only.
//!
//! createContainer and startContainer hooks belong in the container's namespaces, which
//! are in the guest: the agent runs them (agent/src/container/hooks.rs), and
//! `guest_spec` passes only them on.

mod exec;

use std::path::PathBuf;

use oci_spec::runtime::{ContainerState, Hook, Hooks, State};
use thiserror::Error;

pub use exec::run_hook;

/// The host stages, in the order of a container's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Prestart,
    CreateRuntime,
    Poststart,
    Poststop,
}

/// Every stage ward runs, here or in the guest, for `ward features`.
pub const ALL_STAGES: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

impl Stage {
    /// The name of the stage in config.json.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Prestart => "prestart",
            Stage::CreateRuntime => "createRuntime",
            Stage::Poststart => "poststart",
            Stage::Poststop => "poststop",
        }
    }

    fn hooks(self, hooks: &Hooks) -> &[Hook] {
        let list = match self {
            Stage::Prestart => hooks.prestart(),
            Stage::CreateRuntime => hooks.create_runtime(),
            Stage::Poststart => hooks.poststart(),
            Stage::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or(&[])
    }

    /// The container's status the state on stdin reports during this stage.
    fn status(self) -> ContainerState {
        match self {
            Stage::Prestart | Stage::CreateRuntime => ContainerState::Creating,
            Stage::Poststart => ContainerState::Running,
            Stage::Poststop => ContainerState::Stopped,
        }
    }
}

#[derive(Debug, Error)]
pub enum HookError {
    #[error("{stage} hook #{index} ({path}): cannot start it: {source}")]
    Spawn {
        stage: &'static str,
        index: usize,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{stage} hook #{index} ({path}): waiting for it: {source}")]
    Wait {
        stage: &'static str,
        index: usize,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{stage} hook #{index} ({path}) failed: {status}{output}")]
    Failed {
        stage: &'static str,
        index: usize,
        path: PathBuf,
        status: String,
        /// What it printed, for the error message (empty, or ", stdout: ..., stderr: ...").
        output: String,
    },
    #[error("{stage} hook #{index} ({path}) timed out after {secs} s{output}")]
    Timeout {
        stage: &'static str,
        index: usize,
        path: PathBuf,
        secs: u64,
        output: String,
    },
    #[error(
        "{stage} hook #{index} ({path}): timeout {timeout} is not a positive number of seconds"
    )]
    BadTimeout {
        stage: &'static str,
        index: usize,
        path: PathBuf,
        timeout: i64,
    },
    #[error("{stage} hook #{index}: path {path} is not absolute")]
    RelativePath {
        stage: &'static str,
        index: usize,
        path: PathBuf,
    },
    #[error("formatting the state for the {stage} hooks: {source}")]
    State {
        stage: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// What a hook is told about the container (the OCI state, without the status, which
/// depends on the stage).
#[derive(Debug, Clone)]
pub struct HookContext {
    pub id: String,
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    pub annotations: std::collections::HashMap<String, String>,
}

impl HookContext {
    fn state(&self, stage: Stage) -> Result<Vec<u8>, HookError> {
        let mut state = State::default();
        state.set_version(oci_spec::runtime::Spec::default().version().clone());
        state.set_id(self.id.clone());
        state.set_status(stage.status());
        state.set_pid(self.pid);
        state.set_bundle(self.bundle.clone());
        state.set_annotations(Some(self.annotations.clone()));
        serde_json::to_vec(&state).map_err(|source| HookError::State {
            stage: stage.name(),
            source,
        })
    }
}

/// Runs the hooks of `stage` in order; the first failure stops the rest and is returned.
pub fn run_stage(stage: Stage, hooks: &Hooks, ctx: &HookContext) -> Result<(), HookError> {
    let list = stage.hooks(hooks);
    if list.is_empty() {
        return Ok(());
    }
    let state = ctx.state(stage)?;
    for (index, hook) in list.iter().enumerate() {
        run_hook(stage.name(), index, hook, &state)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> HookContext {
        HookContext {
            id: "c1".into(),
            pid: Some(4242),
            bundle: "/b".into(),
            annotations: [("k".to_string(), "v".to_string())].into(),
        }
    }

    #[test]
    fn hooks_run_in_order_with_the_stages_state_and_stop_at_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let append = |name: &str| {
            serde_json::json!({"path": "/bin/sh",
                "args": ["sh", "-c", format!("echo {name} >> {}; cat >> {0}; echo >> {0}", log.display())]})
        };
        let hooks: Hooks = serde_json::from_value(serde_json::json!({
            "prestart": [append("first"), append("second")],
            "poststop": [append("third"), {"path": "/bin/false"}, append("never")]
        }))
        .unwrap();
        run_stage(Stage::Prestart, &hooks, &context()).unwrap();
        let err = run_stage(Stage::Poststop, &hooks, &context()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("poststop hook #1 (/bin/false) failed"),
            "{err}"
        );

        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "first");
        assert_eq!(lines[2], "second");
        assert_eq!(lines[4], "third");
        assert_eq!(lines.len(), 6, "{text}");
        let state: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(state["id"], "c1");
        assert_eq!(state["status"], "creating");
        assert_eq!(state["pid"], 4242);
        assert_eq!(state["bundle"], "/b");
        assert_eq!(state["annotations"]["k"], "v");
        let state: serde_json::Value = serde_json::from_str(lines[5]).unwrap();
        assert_eq!(state["status"], "stopped");
    }
}
