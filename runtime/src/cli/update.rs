//! `ward update [-r FILE|-] [--memory N] [--pids-limit N] [--cpu-quota N] ... ID`: new
//! limits for the container's cgroup in the guest. `-r` takes an OCI linux.resources object,
//! as runc's does; the flags are applied on top of it.

use std::io::Read;

use oci_spec::runtime::{LinuxCpu, LinuxPids, LinuxResources};

use crate::cli::CliError;
use crate::container::{lifecycle, Context};

fn read_resources(args: &liboci_cli::Update) -> Result<LinuxResources, CliError> {
    let Some(path) = &args.resources else {
        return Ok(LinuxResources::default());
    };
    let mut text = Vec::new();
    let what = if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut text)
            .map(drop)
            .map_err(|source| CliError::Io {
                what: "reading resources from stdin".into(),
                source,
            })?;
        "stdin".to_string()
    } else {
        text = std::fs::read(path).map_err(|source| CliError::Io {
            what: format!("reading resources file {}", path.display()),
            source,
        })?;
        path.display().to_string()
    };
    serde_json::from_slice(&text)
        .map_err(|e| CliError::Usage(format!("malformed resources in {what}: {e}")))
}

/// The resources to apply: the file's, then each flag given.
pub fn resources(args: &liboci_cli::Update) -> Result<LinuxResources, CliError> {
    let mut res = read_resources(args)?;
    if args.memory.is_some() || args.memory_reservation.is_some() || args.memory_swap.is_some() {
        let mut memory = (*res.memory()).unwrap_or_default();
        if let Some(limit) = args.memory {
            memory.set_limit(Some(limit as i64));
        }
        if let Some(reservation) = args.memory_reservation {
            memory.set_reservation(Some(reservation as i64));
        }
        if let Some(swap) = args.memory_swap {
            memory.set_swap(Some(swap));
        }
        res.set_memory(Some(memory));
    }
    let cpu_flags = args.cpu_quota.is_some()
        || args.cpu_period.is_some()
        || args.cpu_share.is_some()
        || args.cpuset_cpus.is_some()
        || args.cpuset_mems.is_some();
    if cpu_flags {
        let mut cpu: LinuxCpu = res.cpu().clone().unwrap_or_default();
        if let Some(quota) = args.cpu_quota {
            cpu.set_quota(Some(quota as i64));
        }
        if let Some(period) = args.cpu_period {
            cpu.set_period(Some(period));
        }
        if let Some(shares) = args.cpu_share {
            cpu.set_shares(Some(shares));
        }
        if let Some(cpus) = &args.cpuset_cpus {
            cpu.set_cpus(Some(cpus.clone()));
        }
        if let Some(mems) = &args.cpuset_mems {
            cpu.set_mems(Some(mems.clone()));
        }
        res.set_cpu(Some(cpu));
    }
    if let Some(limit) = args.pids_limit {
        let mut pids: LinuxPids = (*res.pids()).unwrap_or_default();
        pids.set_limit(limit);
        res.set_pids(Some(pids));
    }
    Ok(res)
}

pub fn execute(ctx: &Context, args: &liboci_cli::Update) -> Result<i32, CliError> {
    let res = resources(args)?;
    let json = serde_json::to_vec(&res).map_err(|e| CliError::Io {
        what: "serializing the resources".into(),
        source: e.into(),
    })?;
    lifecycle::update(ctx, &args.container_id, json)?;
    Ok(0)
}
