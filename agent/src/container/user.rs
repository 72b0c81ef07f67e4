//! Who a container process runs as: the spec's `process.user` (numeric IDs, as the OCI
//! spec has them on Linux), the user namespace's ID maps, and HOME from the container's
//! own /etc/passwd — parsed here rather than through glibc's NSS, which a static agent
//! must not call (and which would read the guest's files, not the container's).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use oci_spec::runtime::{LinuxIdMapping, User};
use thiserror::Error;

/// The kernel accepts at most this many lines in uid_map/gid_map.
const MAX_ID_MAP_LINES: usize = 340;
/// How much of /etc/passwd is read looking for HOME.
const MAX_PASSWD_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UserError {
    #[error("{0} lists more than {MAX_ID_MAP_LINES} ranges")]
    TooManyRanges(&'static str),
    #[error("{0} has a range of size 0")]
    EmptyRange(&'static str),
    #[error("{0}: more than 65536 additional groups")]
    TooManyGroups(&'static str),
}

/// The process's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPlan {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
}

pub fn plan(user: &User) -> Result<UserPlan, UserError> {
    let additional_gids = user.additional_gids().clone().unwrap_or_default();
    if additional_gids.len() > 65536 {
        return Err(UserError::TooManyGroups("process.user.additionalGids"));
    }
    Ok(UserPlan {
        uid: user.uid(),
        gid: user.gid(),
        additional_gids,
        umask: user.umask(),
    })
}

/// The text written to /proc/<pid>/uid_map or gid_map: "inside outside size" lines.
pub fn id_map_text(what: &'static str, mappings: &[LinuxIdMapping]) -> Result<String, UserError> {
    if mappings.len() > MAX_ID_MAP_LINES {
        return Err(UserError::TooManyRanges(what));
    }
    let mut text = String::new();
    for m in mappings {
        if m.size() == 0 {
            return Err(UserError::EmptyRange(what));
        }
        text.push_str(&format!(
            "{} {} {}\n",
            m.container_id(),
            m.host_id(),
            m.size()
        ));
    }
    Ok(text)
}

/// The home directory of `uid` in passwd-format text, if listed.
pub fn home_in_passwd<R: Read>(passwd: R, uid: u32) -> Option<String> {
    for line in BufReader::new(passwd).lines() {
        let Ok(line) = line else { break };
        // name:password:uid:gid:gecos:home:shell
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 {
            continue;
        }
        if fields[2].parse::<u32>().ok() == Some(uid) && fields[5].starts_with('/') {
            return Some(fields[5].to_string());
        }
    }
    None
}

/// HOME for `uid` from `<root>/etc/passwd`, or "/" as runc does. `root` is how the agent
/// sees the container's root directory; a symlinked /etc/passwd is not followed (it would
/// be resolved against the agent's root, not the container's).
pub fn home_for(root: &Path, uid: u32) -> String {
    let path = root.join("etc/passwd");
    let is_file = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
    if !is_file {
        return "/".into();
    }
    File::open(&path)
        .ok()
        .and_then(|f| home_in_passwd(f.take(MAX_PASSWD_BYTES), uid))
        .unwrap_or_else(|| "/".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxIdMappingBuilder;

    #[test]
    fn passwd_gives_home() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\n\
                      broken line\n\
                      app:x:1000:1000::/home/app:/bin/sh\n\
                      nohome:x:1001:1001::relative:/bin/sh\n";
        assert_eq!(
            home_in_passwd(passwd.as_bytes(), 0).as_deref(),
            Some("/root")
        );
        assert_eq!(
            home_in_passwd(passwd.as_bytes(), 1000).as_deref(),
            Some("/home/app")
        );
        assert_eq!(home_in_passwd(passwd.as_bytes(), 1001), None);
        assert_eq!(home_in_passwd(passwd.as_bytes(), 5), None);
    }

    #[test]
    fn home_falls_back_to_root() {
        let dir = std::env::temp_dir().join(format!("ward-agent-home-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/passwd"), "u:x:7:7::/home/u:/bin/sh\n").unwrap();
        assert_eq!(home_for(&dir, 7), "/home/u");
        assert_eq!(home_for(&dir, 8), "/");
        assert_eq!(home_for(Path::new("/nonexistent-root"), 0), "/");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn id_maps_are_kernel_text() {
        let map = |c, h, s| {
            LinuxIdMappingBuilder::default()
                .container_id(c)
                .host_id(h)
                .size(s)
                .build()
                .unwrap()
        };
        assert_eq!(
            id_map_text(
                "uidMappings",
                &[map(0u32, 100000u32, 65536u32), map(65536, 1, 1)]
            )
            .unwrap(),
            "0 100000 65536\n65536 1 1\n"
        );
        assert_eq!(
            id_map_text("uidMappings", &[map(0, 1, 0)]),
            Err(UserError::EmptyRange("uidMappings"))
        );
    }

    #[test]
    fn user_plan_copies_ids() {
        let user: User =
            serde_json::from_str(r#"{"uid": 1000, "gid": 100, "additionalGids": [5, 6]}"#).unwrap();
        let plan = plan(&user).unwrap();
        assert_eq!((plan.uid, plan.gid), (1000, 100));
        assert_eq!(plan.additional_gids, vec![5, 6]);
        assert_eq!(plan.umask, None);
    }
}
