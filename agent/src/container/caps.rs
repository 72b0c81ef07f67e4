//! `process.capabilities`: the spec's capability names mapped to the `caps` crate's (pure),
//! and applied in the child in the order the kernel's rules allow (see [`apply`]).

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CapsError {
    #[error("capability {0} is not known to the agent")]
    Unknown(String),
}

/// The five sets a process ends up with. A set the spec leaves out is empty (as runc does).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapsPlan {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    /// The ambient capabilities the kernel will accept: those also permitted and
    /// inheritable.
    pub ambient: CapsHashSet,
    /// Ambient capabilities of the spec left out because they are not both permitted and
    /// inheritable, for a warning. runc raises ambient capabilities one by one and only
    /// warns about those the kernel refuses, and its own default spec lists ambient
    /// capabilities without an inheritable set, so refusing them would refuse runc's
    /// template.
    pub ambient_dropped: Vec<Capability>,
}

/// Maps one capability of the spec to the caps crate's.
pub fn map_capability(cap: &oci_spec::runtime::Capability) -> Result<Capability, CapsError> {
    // oci-spec displays "SYS_ADMIN"; the kernel's (and caps') name is "CAP_SYS_ADMIN".
    let name = format!("CAP_{cap}");
    Capability::from_str(&name).map_err(|_| CapsError::Unknown(name))
}

fn map_set(set: &Option<Capabilities>) -> Result<CapsHashSet, CapsError> {
    set.iter().flatten().map(map_capability).collect()
}

pub fn plan(caps: &LinuxCapabilities) -> Result<CapsPlan, CapsError> {
    let permitted = map_set(caps.permitted())?;
    let inheritable = map_set(caps.inheritable())?;
    let (ambient, dropped): (CapsHashSet, CapsHashSet) = map_set(caps.ambient())?
        .into_iter()
        .partition(|cap| permitted.contains(cap) && inheritable.contains(cap));
    let mut ambient_dropped: Vec<Capability> = dropped.into_iter().collect();
    ambient_dropped.sort_by_key(|cap| cap.index());
    Ok(CapsPlan {
        bounding: map_set(caps.bounding())?,
        effective: map_set(caps.effective())?,
        permitted,
        inheritable,
        ambient,
        ambient_dropped,
    })
}

/// The warning for ambient capabilities left out, worded as runc's.
pub fn ambient_warning(plan: &CapsPlan) -> Option<String> {
    if plan.ambient_dropped.is_empty() {
        return None;
    }
    let names: Vec<String> = plan.ambient_dropped.iter().map(|c| c.to_string()).collect();
    Some(format!(
        "can't raise ambient capabilities {} (not both permitted and inheritable)",
        names.join(", ")
    ))
}

/// Drops every capability outside the bounding set. Needs CAP_SETPCAP, so it runs before
/// the child changes its UID.
pub fn apply_bounding(plan: &CapsPlan) -> Result<(), String> {
    for cap in caps::runtime::thread_all_supported() {
        if !plan.bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
    }
    Ok(())
}

/// Sets the effective, permitted, inheritable and ambient sets; runs after the UID change
/// (made with PR_SET_KEEPCAPS, so the permitted set survived it). Effective first (it must
/// stay inside the permitted set, which is still full), then permitted (which must contain
/// the new effective set), then inheritable, then ambient (whose members must be both
/// permitted and inheritable).
pub fn apply_sets(plan: &CapsPlan) -> Result<(), String> {
    let steps = [
        (CapSet::Effective, &plan.effective, "effective"),
        (CapSet::Permitted, &plan.permitted, "permitted"),
        (CapSet::Inheritable, &plan.inheritable, "inheritable"),
    ];
    for (set, value, name) in steps {
        caps::set(None, set, value).map_err(|e| format!("setting the {name} capabilities: {e}"))?;
    }
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::set(None, CapSet::Ambient, &plan.ambient)
            .map_err(|e| format!("setting the ambient capabilities: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_names_map_to_kernel_capabilities() {
        let caps: LinuxCapabilities = serde_json::from_str(
            r#"{
                "bounding": ["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN", "CAP_BPF",
                             "CAP_CHECKPOINT_RESTORE", "CAP_AUDIT_WRITE", "CAP_MAC_ADMIN"],
                "effective": ["CAP_KILL"],
                "ambient": []
            }"#,
        )
        .unwrap();
        let plan = plan(&caps).unwrap();
        for cap in [
            Capability::CAP_CHOWN,
            Capability::CAP_NET_BIND_SERVICE,
            Capability::CAP_SYS_ADMIN,
            Capability::CAP_BPF,
            Capability::CAP_CHECKPOINT_RESTORE,
            Capability::CAP_AUDIT_WRITE,
            Capability::CAP_MAC_ADMIN,
        ] {
            assert!(plan.bounding.contains(&cap), "{cap}");
        }
        assert_eq!(plan.bounding.len(), 7);
        assert_eq!(plan.effective, CapsHashSet::from([Capability::CAP_KILL]));
        // Sets the spec leaves out are empty.
        assert!(plan.permitted.is_empty() && plan.inheritable.is_empty());
    }

    #[test]
    fn ambient_keeps_only_what_is_permitted_and_inheritable() {
        // runc's default spec: ambient without an inheritable set.
        let caps: LinuxCapabilities = serde_json::from_str(
            r#"{
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            }"#,
        )
        .unwrap();
        let runcs = plan(&caps).unwrap();
        assert!(runcs.ambient.is_empty());
        assert_eq!(
            runcs.ambient_dropped,
            vec![
                Capability::CAP_KILL,
                Capability::CAP_NET_BIND_SERVICE,
                Capability::CAP_AUDIT_WRITE
            ]
        );
        assert_eq!(
            ambient_warning(&runcs).unwrap(),
            "can't raise ambient capabilities CAP_KILL, CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE \
             (not both permitted and inheritable)"
        );

        let caps: LinuxCapabilities = serde_json::from_str(
            r#"{
                "permitted": ["CAP_KILL", "CAP_CHOWN"],
                "inheritable": ["CAP_KILL", "CAP_SETUID"],
                "ambient": ["CAP_KILL", "CAP_CHOWN", "CAP_SETUID"]
            }"#,
        )
        .unwrap();
        let mixed = plan(&caps).unwrap();
        assert_eq!(mixed.ambient, CapsHashSet::from([Capability::CAP_KILL]));
        assert_eq!(
            mixed.ambient_dropped,
            vec![Capability::CAP_CHOWN, Capability::CAP_SETUID]
        );
        let none = plan(&serde_json::from_str("{}").unwrap()).unwrap();
        assert!(ambient_warning(&none).is_none());
    }

    #[test]
    fn every_capability_of_the_caps_crate_round_trips() {
        // Every capability the kernel knows has a spec name that maps back to it.
        for cap in caps::all() {
            let json = format!("\"{cap}\"");
            let spec_cap: oci_spec::runtime::Capability = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("{json} does not parse: {e}"));
            assert_eq!(map_capability(&spec_cap), Ok(cap));
        }
    }
}
