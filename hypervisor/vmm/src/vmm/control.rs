//! Serving the control socket's requests on the main thread, which owns the VM.

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
            let reply = self.handle(call.request);
            let _ = call.reply.send(reply);
        }
    }

    fn handle(&mut self, request: Request) -> Reply {
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
        }
    }

    fn info(&self) -> serde_json::Value {
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
        json!({
            "state": "running",
            "vcpus": {"online": self.online_vcpus(), "max": self.max_vcpus},
            "memory_mib": self.ram.size() >> 20,
            "disks": disks,
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
