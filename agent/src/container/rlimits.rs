//! `process.rlimits`: the spec's names mapped to setrlimit(2) resources (pure), and applied
//! in the child before it drops privileges (raising a hard limit needs CAP_SYS_RESOURCE).

use oci_spec::runtime::{PosixRlimit, PosixRlimitType};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RlimitError {
    #[error("rlimit {name}: soft limit {soft} is above hard limit {hard}")]
    SoftAboveHard { name: String, soft: u64, hard: u64 },
    #[error("rlimit {0} is listed twice")]
    Duplicate(String),
}

/// One limit, ready for setrlimit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// For error messages.
    pub name: &'static str,
    pub resource: libc::__rlimit_resource_t,
    pub soft: u64,
    pub hard: u64,
}

/// The resource constant and the spec's name of a limit type.
pub fn resource(typ: PosixRlimitType) -> (libc::__rlimit_resource_t, &'static str) {
    match typ {
        PosixRlimitType::RlimitCpu => (libc::RLIMIT_CPU, "RLIMIT_CPU"),
        PosixRlimitType::RlimitFsize => (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE"),
        PosixRlimitType::RlimitData => (libc::RLIMIT_DATA, "RLIMIT_DATA"),
        PosixRlimitType::RlimitStack => (libc::RLIMIT_STACK, "RLIMIT_STACK"),
        PosixRlimitType::RlimitCore => (libc::RLIMIT_CORE, "RLIMIT_CORE"),
        PosixRlimitType::RlimitRss => (libc::RLIMIT_RSS, "RLIMIT_RSS"),
        PosixRlimitType::RlimitNproc => (libc::RLIMIT_NPROC, "RLIMIT_NPROC"),
        PosixRlimitType::RlimitNofile => (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
        PosixRlimitType::RlimitMemlock => (libc::RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK"),
        PosixRlimitType::RlimitAs => (libc::RLIMIT_AS, "RLIMIT_AS"),
        PosixRlimitType::RlimitLocks => (libc::RLIMIT_LOCKS, "RLIMIT_LOCKS"),
        PosixRlimitType::RlimitSigpending => (libc::RLIMIT_SIGPENDING, "RLIMIT_SIGPENDING"),
        PosixRlimitType::RlimitMsgqueue => (libc::RLIMIT_MSGQUEUE, "RLIMIT_MSGQUEUE"),
        PosixRlimitType::RlimitNice => (libc::RLIMIT_NICE, "RLIMIT_NICE"),
        PosixRlimitType::RlimitRtprio => (libc::RLIMIT_RTPRIO, "RLIMIT_RTPRIO"),
        PosixRlimitType::RlimitRttime => (libc::RLIMIT_RTTIME, "RLIMIT_RTTIME"),
    }
}

pub fn plan(rlimits: &[PosixRlimit]) -> Result<Vec<Rlimit>, RlimitError> {
    let mut out: Vec<Rlimit> = Vec::with_capacity(rlimits.len());
    for limit in rlimits {
        let (resource, name) = resource(limit.typ());
        if out.iter().any(|r| r.resource == resource) {
            return Err(RlimitError::Duplicate(name.into()));
        }
        if limit.soft() > limit.hard() {
            return Err(RlimitError::SoftAboveHard {
                name: name.into(),
                soft: limit.soft(),
                hard: limit.hard(),
            });
        }
        out.push(Rlimit {
            name,
            resource,
            soft: limit.soft(),
            hard: limit.hard(),
        });
    }
    Ok(out)
}

/// Applies the limits to the calling process (run in the forked child).
pub fn apply(limits: &[Rlimit]) -> Result<(), String> {
    for limit in limits {
        let value = libc::rlimit {
            rlim_cur: limit.soft,
            rlim_max: limit.hard,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(limit.resource, &value) } != 0 {
            return Err(format!(
                "setting {} to soft {} hard {}: {}",
                limit.name,
                limit.soft,
                limit.hard,
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::PosixRlimitBuilder;

    fn limit(typ: PosixRlimitType, soft: u64, hard: u64) -> PosixRlimit {
        PosixRlimitBuilder::default()
            .typ(typ)
            .soft(soft)
            .hard(hard)
            .build()
            .unwrap()
    }

    #[test]
    fn names_map_to_resources() {
        let limits = plan(&[
            limit(PosixRlimitType::RlimitNofile, 1024, 4096),
            limit(PosixRlimitType::RlimitCore, 0, 0),
        ])
        .unwrap();
        assert_eq!(limits[0].resource, libc::RLIMIT_NOFILE);
        assert_eq!((limits[0].soft, limits[0].hard), (1024, 4096));
        assert_eq!(limits[1].name, "RLIMIT_CORE");
        assert_eq!(
            resource(PosixRlimitType::RlimitRttime).0,
            libc::RLIMIT_RTTIME
        );
        // The JSON names the spec uses parse to the same types.
        let parsed: PosixRlimit =
            serde_json::from_str(r#"{"type": "RLIMIT_NPROC", "hard": 10, "soft": 5}"#).unwrap();
        assert_eq!(resource(parsed.typ()), (libc::RLIMIT_NPROC, "RLIMIT_NPROC"));
    }

    #[test]
    fn rejects_inverted_and_repeated_limits() {
        assert!(matches!(
            plan(&[limit(PosixRlimitType::RlimitNofile, 10, 5)]),
            Err(RlimitError::SoftAboveHard { .. })
        ));
        assert_eq!(
            plan(&[
                limit(PosixRlimitType::RlimitAs, 1, 1),
                limit(PosixRlimitType::RlimitAs, 2, 2)
            ]),
            Err(RlimitError::Duplicate("RLIMIT_AS".into()))
        );
    }
}
