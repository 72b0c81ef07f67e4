//! Forwarding the signals a relay receives to its guest process.
//!
//! The signals are blocked in every thread (the mask is set before any thread starts, so
//! all inherit it) and collected by one thread with sigwait, which makes forwarding an
//! ordinary blocking call instead of work inside a signal handler.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// What a relay forwards: everything an engine or a user sends to stop, pause or poke a
/// process. SIGKILL and SIGSTOP cannot be caught; an engine that sends them to the relay
/// ends the relay, and `ward kill` reaches the guest process directly.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCONT,
    Signal::SIGTSTP,
    Signal::SIGWINCH,
    Signal::SIGALRM,
];

pub fn forwarded_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in FORWARDED {
        set.add(*signal);
    }
    set
}

/// Blocks the forwarded signals in the calling thread and every thread it starts later.
pub fn block() -> std::io::Result<()> {
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&forwarded_set()), None)
        .map_err(|e| std::io::Error::other(format!("blocking signals: {e}")))
}

/// Starts the thread that hands each received signal to `forward`.
pub fn spawn_forwarder<F>(forward: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: Fn(Signal) + Send + 'static,
{
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = forwarded_set();
            loop {
                match set.wait() {
                    Ok(signal) => forward(signal),
                    Err(_) => continue,
                }
            }
        })
}

/// The highest signal number Linux has (SIGRTMAX).
const MAX_SIGNAL: i32 = 64;

/// Parses a signal as `kill` accepts it: a number (0 to probe, real-time ones included), or
/// a name with or without "SIG".
pub fn parse(text: &str) -> Option<i32> {
    if let Ok(number) = text.parse::<i32>() {
        return (0..=MAX_SIGNAL).contains(&number).then_some(number);
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().ok().map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_and_names() {
        assert_eq!(parse("15"), Some(15));
        assert_eq!(parse("TERM"), Some(15));
        assert_eq!(parse("SIGKILL"), Some(9));
        assert_eq!(parse("kill"), Some(9));
        assert_eq!(parse("0"), Some(0));
        assert_eq!(parse("34"), Some(34));
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("NOPE"), None);
        assert_eq!(parse("999"), None);
        assert_eq!(parse(""), None);
    }
}
