//! `ward features`: what this runtime and its agent support, in the OCI features format.
//! Only what ward really applies is listed: the hooks it runs (host and guest), the mount options the
//! agent's parser applies, the seccomp profiles the agent loads (agent/src/container/seccomp.rs:
//! every action but SCMP_ACT_NOTIFY, which needs a seccomp agent); what it ignores (AppArmor,
//! SELinux) is reported as not enabled.

use serde_json::json;

use crate::cli::CliError;

/// Mount options the agent's mount parser understands.
const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "lazytime",
    "loud",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "sync",
    "unbindable",
];

/// The agent's seccomp actions: runc's, less SCMP_ACT_NOTIFY (there is no seccomp agent to
/// hand a listener to in the guest).
const SECCOMP_ACTIONS: &[&str] = &[
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_LOG",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
];
const SECCOMP_OPERATORS: &[&str] = &[
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_LE",
    "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_NE",
];
/// The architectures the agent's libseccomp (2.5) adds to a filter.
const SECCOMP_ARCHS: &[&str] = &[
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
];
/// The guest kernel (6.12) has them all; TSYNC is accepted and has nothing to do, as in
/// runc (the process is single-threaded when it loads its filter).
const SECCOMP_FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
];

pub fn document() -> serde_json::Value {
    let capabilities: Vec<String> = caps_all();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": oci_spec::runtime::Spec::default().version(),
        "hooks": crate::hooks::ALL_STAGES,
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": capabilities,
            "cgroup": {"v1": false, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": SECCOMP_ACTIONS,
                "operators": SECCOMP_OPERATORS,
                "archs": SECCOMP_ARCHS,
                "knownFlags": SECCOMP_FLAGS,
                "supportedFlags": SECCOMP_FLAGS
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false}
        },
        "annotations": {
            "io.github.ward.vm-isolated": "true",
            "io.github.ward.agent.protocol": ward_agent_protocol::PROTOCOL_VERSION.to_string()
        }
    })
}

/// Every capability name the kernel headers know, CAP_CHOWN to CAP_CHECKPOINT_RESTORE.
fn caps_all() -> Vec<String> {
    [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    ]
    .map(str::to_string)
    .to_vec()
}

pub fn execute() -> Result<i32, CliError> {
    let text = serde_json::to_string_pretty(&document()).map_err(|e| CliError::Io {
        what: "formatting the features".into(),
        source: e.into(),
    })?;
    println!("{text}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_parse_as_the_oci_features_type() {
        let doc = document();
        let parsed: oci_spec::runtime::Features =
            serde_json::from_value(doc.clone()).expect("OCI features document");
        assert_eq!(parsed.oci_version_min(), "1.0.0");
        assert_eq!(doc["linux"]["cgroup"]["v2"], true);
        assert_eq!(doc["linux"]["capabilities"].as_array().unwrap().len(), 41);
        let seccomp = parsed.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
        assert_eq!(seccomp.enabled(), &Some(true));
        assert_eq!(seccomp.actions().as_ref().unwrap().len(), 8);
        assert_eq!(seccomp.archs().as_ref().unwrap().len(), 17);
    }
}
