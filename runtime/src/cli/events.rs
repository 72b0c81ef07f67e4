//! `ward events [--stats] [--interval N] ID`: runc-shaped statistics of the container's
//! cgroup in the guest. With --stats one event is printed; otherwise one every interval
//! until the container stops.

use std::time::Duration;

use serde_json::json;
use ward_agent_protocol::agent::StatsContainerResponse;

use crate::cli::CliError;
use crate::container::{lifecycle, Context, Status};

/// runc's "stats" event from the guest's cgroup v2 numbers (CPU times in nanoseconds).
pub fn stats_event(id: &str, s: &StatsContainerResponse) -> serde_json::Value {
    let cpu = |key: &str| s.cpu_stat.get(key).copied().unwrap_or(0);
    json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {
                "usage": {
                    "total": cpu("usage_usec") * 1000,
                    "kernel": cpu("system_usec") * 1000,
                    "user": cpu("user_usec") * 1000,
                },
                "throttling": {
                    "periods": cpu("nr_periods"),
                    "throttledPeriods": cpu("nr_throttled"),
                    "throttledTime": cpu("throttled_usec") * 1000,
                },
            },
            "memory": {
                "usage": {
                    "usage": s.memory_current,
                    "max": s.memory_peak,
                    "limit": if s.memory_max == 0 { u64::MAX } else { s.memory_max },
                },
                "raw": s.memory_stat,
            },
            "pids": {
                "current": s.pids_current,
                "limit": s.pids_max,
            },
        },
    })
}

pub fn execute(ctx: &Context, args: &liboci_cli::Events) -> Result<i32, CliError> {
    let id = args.container_id.as_str();
    if args.interval == 0 && !args.stats {
        return Err(CliError::Usage(
            "--interval must be at least 1 second".into(),
        ));
    }
    loop {
        let stats = lifecycle::stats(ctx, id)?;
        println!("{}", stats_event(id, &stats));
        if args.stats {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_secs(u64::from(args.interval)));
        if ctx.store.load(id)?.current_status() == Status::Stopped {
            return Ok(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_shaped_like_runc_events() {
        let mut s = StatsContainerResponse::new();
        s.cpu_stat.insert("usage_usec".into(), 5);
        s.cpu_stat.insert("user_usec".into(), 3);
        s.memory_current = 4096;
        s.pids_current = 2;
        s.pids_max = 10;
        let event = stats_event("c", &s);
        assert_eq!(event["type"], "stats");
        assert_eq!(event["data"]["cpu"]["usage"]["total"], 5000);
        assert_eq!(event["data"]["cpu"]["usage"]["user"], 3000);
        assert_eq!(event["data"]["memory"]["usage"]["usage"], 4096);
        assert_eq!(event["data"]["memory"]["usage"]["limit"], u64::MAX);
        assert_eq!(event["data"]["pids"]["current"], 2);
        assert_eq!(event["data"]["pids"]["limit"], 10);
    }
}
