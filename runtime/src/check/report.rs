//! What `ward check` found: items with a status and a fix, a summary, and the two ways of
//! showing them (text for people, one JSON document for programs).

use std::fmt::Write as _;

use serde::Serialize;

/// How one finding bears on running ward here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// ward runs, but slower, with less, or not from some engine.
    Warn,
    /// ward cannot run containers here until this is fixed.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// Stable, for scripts: `group.what`, e.g. `kvm.device`.
    pub id: String,
    pub group: String,
    pub status: Status,
    pub message: String,
    /// What to do about a warning or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Facts behind the message (paths, raw numbers); shown with --verbose.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl Item {
    fn new(id: &str, status: Status, message: impl Into<String>) -> Item {
        Item {
            id: id.to_string(),
            // The group is the id's first part, so that the two never disagree.
            group: id.split('.').next().unwrap_or(id).to_string(),
            status,
            message: message.into(),
            hint: None,
            details: Vec::new(),
        }
    }

    pub fn pass(id: &str, message: impl Into<String>) -> Item {
        Item::new(id, Status::Pass, message)
    }

    pub fn warn(id: &str, message: impl Into<String>, hint: impl Into<String>) -> Item {
        Item::new(id, Status::Warn, message).hint(hint)
    }

    pub fn fail(id: &str, message: impl Into<String>, hint: impl Into<String>) -> Item {
        Item::new(id, Status::Fail, message).hint(hint)
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Item {
        self.hint = Some(hint.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Item {
        self.details.push(detail.into());
        self
    }
}

/// The verdict, for people and for scripts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub backend: String,
    /// The accelerator ward will use; None when it cannot be decided (e.g. forced KVM
    /// without /dev/kvm).
    pub accelerator: Option<String>,
    pub kvm_class: String,
    /// No item failed.
    pub can_run: bool,
    pub passed: usize,
    pub warnings: usize,
    pub failures: usize,
    /// The configuration file read; None for built-in defaults.
    pub config: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub items: Vec<Item>,
    pub summary: Summary,
}

impl Report {
    pub fn new(
        items: Vec<Item>,
        backend: String,
        accelerator: Option<String>,
        kvm_class: String,
        config: Option<String>,
    ) -> Report {
        let count = |s: Status| items.iter().filter(|i| i.status == s).count();
        let summary = Summary {
            backend,
            accelerator,
            kvm_class,
            can_run: count(Status::Fail) == 0,
            passed: count(Status::Pass),
            warnings: count(Status::Warn),
            failures: count(Status::Fail),
            config,
        };
        Report { items, summary }
    }

    /// 0 when ward can run here (and, with `strict`, nothing warned), 1 otherwise.
    pub fn exit_code(&self, strict: bool) -> i32 {
        let ok = self.summary.can_run && !(strict && self.summary.warnings > 0);
        if ok {
            0
        } else {
            1
        }
    }

    pub fn to_json(&self) -> String {
        // Plain strings, numbers and enums: serialization cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The text for people: items by group, hints under warnings and failures; passing
    /// items' details only with `verbose`.
    pub fn to_text(&self, verbose: bool) -> String {
        let mut out = String::new();
        let width = self.items.iter().map(|i| i.id.len()).max().unwrap_or(0);
        let mut group = "";
        for item in &self.items {
            if item.group != group {
                group = &item.group;
                let _ = writeln!(
                    out,
                    "{}{}",
                    if out.is_empty() { "" } else { "\n" },
                    title(group)
                );
            }
            let _ = writeln!(
                out,
                "  [{}] {:width$}  {}",
                item.status.label(),
                item.id,
                item.message
            );
            let indent = " ".repeat(width + 11);
            if verbose {
                for detail in &item.details {
                    let _ = writeln!(out, "{indent}{detail}");
                }
            }
            if let Some(hint) = &item.hint {
                if item.status != Status::Pass || verbose {
                    for (n, line) in hint.lines().enumerate() {
                        let lead = if n == 0 { "fix: " } else { "     " };
                        let _ = writeln!(out, "{indent}{lead}{line}");
                    }
                }
            }
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "\nConfiguration: {}",
            s.config.as_deref().unwrap_or("built-in defaults")
        );
        let _ = writeln!(
            out,
            "Backend: {}, accelerator: {} (KVM: {})",
            s.backend,
            s.accelerator.as_deref().unwrap_or("none"),
            s.kvm_class
        );
        let _ = writeln!(
            out,
            "{} passed, {} warnings, {} failed: {}",
            s.passed,
            s.warnings,
            s.failures,
            if s.can_run {
                "ward can run containers on this host"
            } else {
                "ward cannot run containers on this host"
            }
        );
        out
    }
}

fn title(group: &str) -> &str {
    match group {
        "cpu" => "CPU",
        "kvm" => "KVM",
        "vsock" => "vsock",
        "sharedfs" => "Shared filesystems",
        "qemu" => "QEMU",
        "assets" => "Guest assets",
        "host" => "Host",
        "integrations" => "Integrations",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(items: Vec<Item>) -> Report {
        Report::new(
            items,
            "qemu".into(),
            Some("tcg".into()),
            "emulated-ring0".into(),
            None,
        )
    }

    #[test]
    fn exit_codes_follow_failures_and_strictness() {
        let ok = report(vec![Item::pass("cpu.vendor", "AMD")]);
        assert_eq!(ok.exit_code(false), 0);
        assert_eq!(ok.exit_code(true), 0);
        let warned = report(vec![Item::warn("kvm.class", "emulated", "none")]);
        assert!(warned.summary.can_run);
        assert_eq!(warned.exit_code(false), 0);
        assert_eq!(warned.exit_code(true), 1);
        let failed = report(vec![Item::fail("qemu.binary", "missing", "install it")]);
        assert!(!failed.summary.can_run);
        assert_eq!(failed.exit_code(false), 1);
    }

    #[test]
    fn json_has_items_and_summary() {
        let r = report(vec![
            Item::warn("host.userns", "off", "turn it on").detail("x")
        ]);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["items"][0]["id"], "host.userns");
        assert_eq!(v["items"][0]["group"], "host");
        assert_eq!(v["items"][0]["status"], "warn");
        assert_eq!(v["items"][0]["hint"], "turn it on");
        assert_eq!(v["summary"]["accelerator"], "tcg");
        assert_eq!(v["summary"]["kvm_class"], "emulated-ring0");
        assert_eq!(v["summary"]["can_run"], true);
    }

    #[test]
    fn text_shows_hints_and_details_on_demand() {
        let r = report(vec![
            Item::pass("cpu.vendor", "AMD").detail("vendor_id AuthenticAMD"),
            Item::warn("kvm.class", "emulated", "use hardware"),
        ]);
        let plain = r.to_text(false);
        assert!(plain.contains("[warn] kvm.class"), "{plain}");
        assert!(plain.contains("fix: use hardware"), "{plain}");
        assert!(!plain.contains("vendor_id"), "{plain}");
        assert!(r.to_text(true).contains("vendor_id AuthenticAMD"));
        assert!(plain.contains("built-in defaults"));
    }
}
