//! Serving the control socket's requests on the main thread, which owns the VM.

use std::os::fd::OwnedFd;

use serde_json::json;

use super::virtio::VirtioKind;
use super::Vmm;
use crate::api::{self, protocol::DEFAULT_SHUTDOWN_GRACE_MS, Reply, Request};
use crate::config::DiskConfig;
use crate::devices::hotplug::ged;
use crate::vstate::vcpu::ExitReason;

impl Vmm {
    pub(super) fn serve_api(&mut self) {
        let Some(api) = &self.api else {
            return;
        };
        let _ = api.wake.read();
        let calls: Vec<api::Call> = api.calls.try_iter().collect();
        for call in calls {
            // A descriptor not used is closed before the reply goes out.
            let reply = self.handle(call.request, call.fd);
            let _ = call.reply.send(reply);
        }
    }

    fn handle(&mut self, request: Request, fd: Option<OwnedFd>) -> Reply {
        match request {
            Request::Ping => Reply::ok(),
            Request::Info => Reply::Ok(self.info()),
            Request::Shutdown { grace_ms } => {
                self.shutdown(grace_ms.unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS))
            }
            Request::SetVcpus { count } => self
                .set_vcpus(count)
                .map_or_else(Reply::Err, |()| Reply::ok()),
            Request::AddDisk { id, path, readonly } => self
                .add_disk(DiskConfig { id, path, readonly })
                .map_or_else(Reply::Err, |()| Reply::ok()),
            // Pending: the slot is freed when the guest ejects it (see README).
            Request::RemoveDisk { id } => self
                .remove_disk(&id)
                .map_or_else(Reply::Err, |()| Reply::Ok(json!({"pending": true}))),
            Request::AddNet { id, mac, mtu } => match fd {
                Some(tap) => self
                    .add_net(id, mac, mtu, tap)
                    .map_or_else(Reply::Err, |()| Reply::ok()),
                // The API thread sees to it; this is for calls made another way.
                None => Reply::Err("add_net: no tap descriptor came with the request".into()),
            },
            // Pending like a disk's: the slot is freed when the guest ejects it.
            Request::RemoveNet { id } => self
                .remove_net(&id)
                .map_or_else(Reply::Err, |()| Reply::Ok(json!({"pending": true}))),
        }
    }

    pub(super) fn info(&self) -> serde_json::Value {
        let disks: Vec<serde_json::Value> = self
            .virtio
            .iter()
            .filter_map(|s| match &s.kind {
                VirtioKind::Block(d) => Some(json!({
                    "id": d.id,
                    "path": d.path,
                    "readonly": d.readonly,
                    "state": if s.removing { "removing" } else { "attached" },
                })),
                _ => None,
            })
            .collect();
        // Every card; those given on the command line have a null id and stay.
        let nets: Vec<serde_json::Value> = self
            .virtio
            .iter()
            .filter_map(|s| match &s.kind {
                VirtioKind::Net { id, config, tap } => Some(json!({
                    "id": id,
                    "mac": config.mac_string(),
                    "mtu": config.mtu,
                    "tap": tap.name(),
                    "state": if s.removing { "removing" } else { "attached" },
                })),
                _ => None,
            })
            .collect();
        json!({
            "state": "running",
            "vcpus": {"online": self.online_vcpus(), "max": self.max_vcpus},
            "memory_mib": self.ram.size() >> 20,
            "disks": disks,
            "nets": nets,
            "acpi": self.hotplug.is_some(),
        })
    }

    fn shutdown(&mut self, grace_ms: u64) -> Reply {
        let graceful = match &self.hotplug {
            Some(h) if grace_ms > 0 => h.ged.notify(ged::EVENT_SHUTDOWN).is_ok(),
            _ => false,
        };
        if !graceful {
            self.exit.request(ExitReason::PowerOff);
            return Reply::Ok(json!({"graceful": false}));
        }
        // The guest powers off by itself (ACPI S5) or is stopped when the grace is over.
        let exit = self.exit.clone();
        let timer = std::thread::Builder::new()
            .name("shutdown-grace".into())
            .spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(grace_ms));
                exit.request(ExitReason::PowerOff);
            });
        if timer.is_err() {
            self.exit.request(ExitReason::PowerOff);
        }
        Reply::Ok(json!({"graceful": true, "grace_ms": grace_ms}))
    }
}
