//! The node's state as Prometheus metrics, in the text format that node
//! exporter's textfile collector reads: what the node runs, and how its last
//! deploy and pull went.
//!
//! Made anew after every deploy and pull (and a push's deploy), in
//! `state/metrics.prom` and, where node exporter's directory exists
//! (Debian's prometheus-node-exporter reads
//! /var/lib/prometheus/node-exporter/*.prom), in `troops.prom` there; both
//! under --root. Each file is replaced whole, so a scrape never reads half.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::check;
use crate::history::Record;
use crate::paths::{self, Node};
use crate::pull::{Outcome, Report};
use crate::status::Snapshot;

/// Where node exporter's textfile collector looks (under the node's root).
const TEXTFILE_DIR: &str = "var/lib/prometheus/node-exporter";

/// Rewrites the metrics; a failure is a warning, never the run's.
pub fn update(node: &Node, state: &Snapshot) {
    if let Err(e) = write(node, state) {
        eprintln!("troops: warning: cannot write the metrics: {e:#}");
    }
}

fn write(node: &Node, state: &Snapshot) -> Result<()> {
    let text = render(
        state.deployed.as_deref(),
        state.latest.as_ref(),
        state.pull.as_ref(),
        state.check.as_ref(),
    );
    paths::replace_file(&node.state().join("metrics.prom"), text.as_bytes(), 0o644)?;
    let textfile = node.root().join(TEXTFILE_DIR);
    if textfile.is_dir() {
        // Its parent is the prometheus user's: a link there is refused, a
        // link at the file's name replaced, never followed.
        let dir = paths::open_dir_nofollow(&textfile)?;
        paths::write_at(
            &dir,
            "troops.prom",
            text.as_bytes(),
            0o644,
            nix::unistd::Gid::from_raw(0),
        )?;
    }
    Ok(())
}

/// The metrics text; a metric whose value is unknown yet is left out.
fn render(
    deployed: Option<&str>,
    deploy: Option<&Record>,
    pull: Option<&Report>,
    check: Option<&check::Report>,
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, labels: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP troops_{name} {help}\n# TYPE troops_{name} gauge\ntroops_{name}{labels} {value}"
        );
    };
    if let Some(commit) = deployed {
        metric(
            "deployed_info",
            "The commit the node runs (value 1).",
            &format!("{{commit=\"{commit}\"}}"),
            1.0,
        );
    }
    if let Some(record) = deploy.filter(|r| r.result != "running") {
        let labels = format!("{{trigger=\"{}\"}}", record.trigger.as_str());
        metric(
            "last_deploy_success",
            "1 if the last deploy succeeded, 0 if it failed.",
            &labels,
            f64::from(u8::from(record.result == "success")),
        );
        if let Some(started) = unix_seconds(&record.started_at) {
            metric(
                "last_deploy_timestamp_seconds",
                "When the last deploy started, in seconds since the epoch.",
                "",
                started,
            );
        }
        metric(
            "last_deploy_duration_seconds",
            "How long the last deploy took.",
            "",
            record.duration_ms as f64 / 1000.0,
        );
    }
    if let Some(report) = pull {
        metric(
            "last_pull_success",
            "1 unless the last pull failed (it deployed, held back or had nothing to do).",
            "",
            f64::from(u8::from(report.result != Outcome::Failed)),
        );
        if let Some(finished) = unix_seconds(&report.finished_at) {
            metric(
                "last_pull_timestamp_seconds",
                "When the last pull finished, in seconds since the epoch.",
                "",
                finished,
            );
        }
        metric(
            "pull_held_back",
            "1 if the last pull held a commit back (troops.yaml rollout).",
            "",
            f64::from(u8::from(report.result == Outcome::HeldBack)),
        );
    }
    if let Some(check) = check {
        let failed = check.result == check::Outcome::Failed;
        metric(
            "last_check_success",
            "1 if the last troops check ran, 0 if the check itself failed.",
            "",
            f64::from(u8::from(!failed)),
        );
        if !failed {
            metric(
                "drift",
                "How many changes the deployed commit would make (troops check).",
                "",
                check.changes.len() as f64,
            );
        }
        if let Some(finished) = unix_seconds(&check.finished_at) {
            metric(
                "last_check_timestamp_seconds",
                "When the last troops check finished, in seconds since the epoch.",
                "",
                finished,
            );
        }
    }
    out
}

fn unix_seconds(rfc3339: &str) -> Option<f64> {
    let time: SystemTime = humantime::parse_rfc3339(rfc3339).ok()?;
    Some(time.duration_since(UNIX_EPOCH).ok()?.as_secs_f64())
}
