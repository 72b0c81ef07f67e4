//! Netlink work inside another network namespace: a thread of its own enters it (setns
//! changes only the calling thread's namespace), opens its netlink socket there (a
//! socket belongs to the namespace it was made in), and runs the work on a one-thread
//! tokio runtime, within a deadline.

use std::fs::File;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use nix::sched::CloneFlags;
use rtnetlink::Handle;

use super::NetworkError;

/// Netlink calls are answered by the local kernel at once; this only catches a wedge.
const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `work` with a netlink handle in the network namespace `netns`.
pub fn within<T, F, Fut>(netns: &Path, what: &'static str, work: F) -> Result<T, NetworkError>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, NetworkError>>,
{
    let io_err = |source| NetworkError::Namespace {
        path: netns.to_path_buf(),
        source,
    };
    let file = File::open(netns).map_err(io_err)?;
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| io_err(std::io::Error::from(e)))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(io_err)?;
            runtime.block_on(async {
                let (connection, handle, _) = rtnetlink::new_connection().map_err(io_err)?;
                tokio::spawn(connection);
                match tokio::time::timeout(DEADLINE, work(handle)).await {
                    Ok(result) => result,
                    Err(_) => Err(NetworkError::Timeout {
                        path: netns.to_path_buf(),
                        what,
                        secs: DEADLINE.as_secs(),
                    }),
                }
            })
        });
        worker.join().unwrap_or_else(|_| {
            Err(io_err(std::io::Error::other(format!(
                "the thread {what} panicked"
            ))))
        })
    })
}

/// A netlink failure, named.
pub fn failed(path: &Path, what: String) -> impl FnOnce(rtnetlink::Error) -> NetworkError + use<> {
    let path = path.to_path_buf();
    move |e| NetworkError::Netlink {
        path,
        what,
        message: e.to_string(),
    }
}
