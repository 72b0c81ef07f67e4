//! The program a container process runs: argv and environment checked and turned into C
//! strings (pure), the `PATH` search that `execvp` would do — computed as a list of
//! candidates by the agent, tried in order by the child — and the final exec.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Used when the process's environment has no PATH (the same default as runc's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Bound on the total size of argv + env (the kernel's own limit is about this much for
/// one argument string, and the whole must fit the stack).
const MAX_TOTAL: usize = 1024 * 1024;
/// Bound on the number of argv or env entries.
const MAX_ENTRIES: usize = 8192;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("process.args is empty")]
    NoArgs,
    #[error("process.args[{0}] contains a NUL byte")]
    NulInArg(usize),
    #[error("process.env[{0}] is not KEY=VALUE or contains a NUL byte")]
    BadEnv(usize),
    #[error("process.args and process.env are too large ({0} entries or more than 1 MiB)")]
    TooLarge(usize),
    #[error("process.cwd {0:?} is not an absolute path")]
    RelativeCwd(String),
}

/// The program, ready for execve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// args[0] as the spec gave it, for error messages.
    pub program: String,
    /// Paths to try, in order.
    pub candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
}

pub fn plan(args: &[String], env: &[String], cwd: &Path) -> Result<Command, CommandError> {
    let program = args.first().ok_or(CommandError::NoArgs)?.clone();
    if program.is_empty() {
        return Err(CommandError::NoArgs);
    }
    let entries = args.len() + env.len();
    let size: usize = args.iter().chain(env).map(|s| s.len() + 1).sum();
    if entries > MAX_ENTRIES || size > MAX_TOTAL {
        return Err(CommandError::TooLarge(entries));
    }
    let argv = args
        .iter()
        .enumerate()
        .map(|(i, a)| CString::new(a.as_bytes()).map_err(|_| CommandError::NulInArg(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let key_ok = e.split_once('=').is_some_and(|(k, _)| !k.is_empty());
            if !key_ok {
                return Err(CommandError::BadEnv(i));
            }
            CString::new(e.as_bytes()).map_err(|_| CommandError::BadEnv(i))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !cwd.is_absolute() {
        return Err(CommandError::RelativeCwd(cwd.display().to_string()));
    }
    let cwd = CString::new(cwd.as_os_str().as_encoded_bytes())
        .map_err(|_| CommandError::RelativeCwd(cwd.display().to_string()))?;
    let candidates = candidates(&program, env)
        .into_iter()
        .filter_map(|p| CString::new(p.into_os_string().into_encoded_bytes()).ok())
        .collect();
    Ok(Command {
        program,
        candidates,
        argv,
        envp,
        cwd,
    })
}

/// The value of `key` in a KEY=VALUE list (the first one, as getenv finds).
pub fn env_value<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .filter_map(|e| e.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Where execvp would look for `program`, in order.
pub fn candidates(program: &str, env: &[String]) -> Vec<PathBuf> {
    if program.contains('/') {
        return vec![PathBuf::from(program)];
    }
    let path = env_value(env, "PATH").unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|dir| {
            // An empty element means the current directory, as in execvp.
            let dir = if dir.is_empty() { "." } else { dir };
            Path::new(dir).join(program)
        })
        .collect()
}

/// `env` with HOME added when it has none.
pub fn with_home(mut env: Vec<String>, home: &str) -> Vec<String> {
    if env_value(&env, "HOME").is_none() {
        env.push(format!("HOME={home}"));
    }
    env
}

/// Whether the program can be found, checked in the container's root before the process
/// reports ready: an engine then hears at create, as with runc, that the program is
/// missing (podman maps runc's wording to exit status 127). Relative paths resolve
/// against the process's cwd. Runs in a forked child; allocating is fine there.
pub fn check_exists(command: &Command) -> Result<(), String> {
    let cwd = Path::new(std::ffi::OsStr::from_bytes(command.cwd.as_bytes()));
    let found = command.candidates.iter().any(|candidate| {
        let path = Path::new(std::ffi::OsStr::from_bytes(candidate.as_bytes()));
        let path = if path.is_relative() {
            cwd.join(path)
        } else {
            path.to_path_buf()
        };
        std::fs::metadata(&path).is_ok_and(|m| {
            m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
        })
    });
    if found {
        return Ok(());
    }
    if command.program.contains('/') {
        Err(format!(
            "exec: {:?}: stat {}: no such file or directory",
            command.program, command.program
        ))
    } else {
        Err(format!(
            "exec: {:?}: executable file not found in $PATH",
            command.program
        ))
    }
}

/// execve()s each candidate in turn, as execvp does: "not found" moves on to the next, any
/// other error is remembered. Only returns on failure, with the message the host sees.
pub fn exec(command: &Command) -> String {
    let mut first_error: Option<nix::Error> = None;
    for path in &command.candidates {
        let Err(err) = nix::unistd::execve(path, &command.argv, &command.envp);
        match err {
            nix::Error::ENOENT | nix::Error::ENOTDIR => {}
            other => {
                if first_error.is_none() {
                    first_error = Some(other);
                }
            }
        }
    }
    let err = first_error.unwrap_or(nix::Error::ENOENT);
    format!("exec {:?}: {}", command.program, err.desc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn path_lookup_follows_execvp() {
        let env = strings(&["TERM=xterm", "PATH=/bin:/usr/bin:"]);
        assert_eq!(
            candidates("echo", &env),
            vec![
                PathBuf::from("/bin/echo"),
                PathBuf::from("/usr/bin/echo"),
                PathBuf::from("./echo")
            ]
        );
        assert_eq!(
            candidates("./run.sh", &env),
            vec![PathBuf::from("./run.sh")]
        );
        assert_eq!(candidates("/bin/sh", &env), vec![PathBuf::from("/bin/sh")]);
        let default = candidates("sh", &[]);
        assert_eq!(default.len(), 6);
        assert_eq!(default[0], PathBuf::from("/usr/local/sbin/sh"));
    }

    #[test]
    fn a_missing_program_is_reported_in_runcs_words() {
        let env = strings(&["PATH=/nonexistent:/bin"]);
        let found = plan(&strings(&["sh"]), &env, Path::new("/")).unwrap();
        assert_eq!(check_exists(&found), Ok(()));
        let missing = plan(&strings(&["no-such-command"]), &env, Path::new("/")).unwrap();
        assert_eq!(
            check_exists(&missing).unwrap_err(),
            "exec: \"no-such-command\": executable file not found in $PATH"
        );
        let absolute = plan(&strings(&["/no/such"]), &env, Path::new("/")).unwrap();
        assert_eq!(
            check_exists(&absolute).unwrap_err(),
            "exec: \"/no/such\": stat /no/such: no such file or directory"
        );
        // A directory is not a program.
        let dir = plan(&strings(&["/tmp"]), &env, Path::new("/")).unwrap();
        assert!(check_exists(&dir).is_err());
        // Relative to the process's cwd.
        let relative = plan(&strings(&["./sh"]), &env, Path::new("/bin")).unwrap();
        assert_eq!(check_exists(&relative), Ok(()));
    }

    #[test]
    fn commands_are_checked() {
        let cmd = plan(
            &strings(&["sh", "-c", "exit 3"]),
            &strings(&["PATH=/bin"]),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(cmd.program, "sh");
        assert_eq!(cmd.candidates, vec![CString::new("/bin/sh").unwrap()]);
        assert_eq!(cmd.argv.len(), 3);
        assert_eq!(plan(&[], &[], Path::new("/")), Err(CommandError::NoArgs));
        assert_eq!(
            plan(&strings(&["a\0b"]), &[], Path::new("/")),
            Err(CommandError::NulInArg(0))
        );
        assert_eq!(
            plan(&strings(&["a"]), &strings(&["NOEQUALS"]), Path::new("/")),
            Err(CommandError::BadEnv(0))
        );
        assert_eq!(
            plan(&strings(&["a"]), &strings(&["=x"]), Path::new("/")),
            Err(CommandError::BadEnv(0))
        );
        assert!(matches!(
            plan(&strings(&["a"]), &[], Path::new("tmp")),
            Err(CommandError::RelativeCwd(_))
        ));
        let huge = vec!["x".repeat(1024); 2048];
        assert!(matches!(
            plan(&huge, &[], Path::new("/")),
            Err(CommandError::TooLarge(_))
        ));
    }

    #[test]
    fn home_is_added_once() {
        let env = with_home(strings(&["A=1"]), "/root");
        assert_eq!(env, strings(&["A=1", "HOME=/root"]));
        assert_eq!(with_home(env.clone(), "/other"), env);
    }

    #[test]
    fn exec_failure_names_the_program() {
        let cmd = plan(
            &strings(&["nosuch"]),
            &strings(&["PATH=/nonexistent-dir:/also-not-here"]),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(exec(&cmd), "exec \"nosuch\": No such file or directory");
    }
}
