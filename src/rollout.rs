//! Gradual rollout for pull fleets: `troops.yaml`'s `rollout`.
//!
//! A deployment commit may ask that only a fraction of nodes take it
//! (`rollout: 25`), or that it go to a canary fraction first and to the rest
//! only once the canaries' status reports show it works (`rollout: {canary:
//! 5%, wait: 30min, max_failures: 1}`). Each node places itself by a stable
//! hash of its hostname (not of the commit), so the nodes inside 25% are
//! still inside 50%, a later commit with a larger fraction widens the same
//! set, and every node agrees on which nodes are canaries. troops.yaml is
//! read from the commit without running any Python.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::UserError;
use crate::git::{Repo, short};
use crate::paths::Node;
use crate::report::{self, KEYS_FILE, Received};

/// What a commit's troops.yaml asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Rollout {
    /// This percentage of the nodes take the commit.
    Fraction(f64),
    /// Canary waves.
    Waves(Waves),
}

/// `rollout: {canary, wait, max_failures}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Waves {
    /// The percentage of nodes that take the commit at once (at least one).
    pub canary: f64,
    /// How long after a canary's first success report the rest may follow.
    pub wait: Duration,
    /// How many canaries may report failing it before the rest hold back.
    pub max_failures: usize,
}

/// The commit's rollout, if its troops.yaml sets one.
pub fn read(repo: &Repo, commit: &str) -> Result<Option<Rollout>> {
    let Some(text) = repo.file_at(commit, "troops.yaml")? else {
        return Ok(None);
    };
    parse(&text).map_err(|e| {
        UserError::new(format!(
            "invalid troops.yaml in commit {}: {e}",
            short(commit)
        ))
        .hint(
            "`rollout` takes a percentage (`rollout: 25`) or canary waves \
             (`rollout: {canary: 5%, wait: 30min, max_failures: 1}`)",
        )
        .into()
    })
}

fn parse(text: &str) -> std::result::Result<Option<Rollout>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    let top = match &doc {
        Value::Null => return Ok(None),
        Value::Object(top) => top,
        _ => return Err("the file must be a mapping".to_owned()),
    };
    if let Some(key) = top.keys().find(|k| *k != "rollout") {
        return Err(format!("unknown key `{key}`"));
    }
    match top.get("rollout") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(waves)) => parse_waves(waves).map(|w| Some(Rollout::Waves(w))),
        Some(value) => percent(value, "rollout").map(|p| Some(Rollout::Fraction(p))),
    }
}

fn parse_waves(map: &serde_json::Map<String, Value>) -> std::result::Result<Waves, String> {
    if let Some(key) = map
        .keys()
        .find(|k| !["canary", "wait", "max_failures"].contains(&k.as_str()))
    {
        return Err(format!("unknown key `rollout.{key}`"));
    }
    let canary = percent(
        map.get("canary")
            .ok_or("`rollout.canary` is missing: the canary percentage")?,
        "rollout.canary",
    )?;
    let wait = match map.get("wait") {
        None => Duration::ZERO,
        Some(Value::String(span)) => humantime::parse_duration(span)
            .map_err(|_| format!("`rollout.wait: {span}` is not a time span like 30min"))?,
        Some(other) => {
            return Err(format!(
                "`rollout.wait: {other}` is not a time span like 30min"
            ));
        }
    };
    let max_failures = match map.get("max_failures") {
        None => 0,
        Some(value) => value
            .as_u64()
            .ok_or_else(|| format!("`rollout.max_failures: {value}` is not a number of nodes"))?
            as usize,
    };
    Ok(Waves {
        canary,
        wait,
        max_failures,
    })
}

/// A percentage: a number, or a string such as "12.5%".
fn percent(value: &Value, key: &str) -> std::result::Result<f64, String> {
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(t) => t.trim().trim_end_matches('%').trim().parse::<f64>().ok(),
        _ => None,
    };
    match number {
        Some(n) if (0.0..=100.0).contains(&n) => Ok(n),
        Some(n) => Err(format!("`{key}: {n}` is not between 0 and 100")),
        None => Err(format!("`{key}: {value}` is not a percentage")),
    }
}

/// Why this node holds `commit` back under `waves`, or `None` when it may
/// deploy it now: it is a canary, or the canaries' verified reports show
/// the commit working for long enough and failing on few enough of them.
/// Reports are read only here, while a commit is pending.
pub fn held_by_waves(
    node: &Node,
    config: &Config,
    repo: &Repo,
    commit: &str,
    waves: &Waves,
) -> Result<Option<String>> {
    let hostname = hostname();
    let keys = report::node_keys(repo, commit)?;
    let fleet = keys.as_ref().map_or_else(Vec::new, |k| k.hostnames.clone());
    let canaries = canaries(&fleet, waves.canary);
    // The keys file names the fleet; without one, the hash alone places a
    // node (and the rest cannot verify anything, so they hold back).
    let canary = if fleet.is_empty() {
        takes(&hostname, waves.canary)
    } else {
        canaries.contains(&hostname)
    };
    if canary {
        return Ok(None);
    }
    let (Some(keys), false) = (keys, canaries.is_empty()) else {
        return Ok(Some(format!(
            "canary waves: commit {} has no {KEYS_FILE} listing the nodes, so no canary's \
             report can be verified; add `HOSTNAME KEY` lines to it",
            short(commit)
        )));
    };
    let Some(remote) = &config.report else {
        return Ok(Some(
            "canary waves: this node has no report remote to read the canaries' reports \
             from (`[report] url` in /etc/troops/troops.toml)"
                .to_owned(),
        ));
    };
    let reports = match report::fetch_and_read(node, &remote.url, keys.path(), &canaries) {
        Ok(reports) => reports,
        Err(e) => {
            return Ok(Some(format!(
                "canary waves: cannot read the status reports from `{}`: {}",
                crate::remotes::redact(&remote.url),
                crate::engine::one_line(&e)
            )));
        }
    };
    Ok(decide(commit, &canaries, &reports, waves, SystemTime::now()).err())
}

/// The canary nodes of `fleet`: those inside `percent`, or the one placed
/// first when none is, so that a small fleet still has a canary.
pub fn canaries(fleet: &[String], percent: f64) -> Vec<String> {
    let inside: Vec<String> = fleet
        .iter()
        .filter(|n| takes(n, percent))
        .cloned()
        .collect();
    if !inside.is_empty() {
        return inside;
    }
    fleet
        .iter()
        .min_by(|a, b| position(a).total_cmp(&position(b)))
        .cloned()
        .into_iter()
        .collect()
}

/// Whether the canaries' verified reports let the rest take `commit` now;
/// `Err` says why not.
fn decide(
    commit: &str,
    canaries: &[String],
    reports: &[Received],
    waves: &Waves,
    now: SystemTime,
) -> std::result::Result<(), String> {
    let mut succeeded: Vec<(SystemTime, &str)> = Vec::new();
    let mut failed: Vec<&str> = Vec::new();
    for received in reports.iter().filter(|r| canaries.contains(&r.hostname)) {
        // A stale report is silence: the canary may have moved on since.
        let Some(report) = received.trusted().filter(|r| !report::is_stale(r, now)) else {
            continue;
        };
        let facts = &report.facts;
        let deployed = facts.deployed.as_ref().filter(|d| d.commit == commit);
        if let Some(deployed) = deployed {
            if let Ok(at) = humantime::parse_rfc3339(&deployed.at) {
                succeeded.push((at, &received.hostname));
            }
        } else if facts
            .last_deploy
            .as_ref()
            .is_some_and(|d| d.commit.as_deref() == Some(commit) && d.result == "failure")
        {
            failed.push(&received.hostname);
        }
    }
    let commit = short(commit);
    if failed.len() > waves.max_failures {
        return Err(format!(
            "canary waves: {} canary node(s) failed to deploy {commit} ({}), more than \
             max_failures: {}",
            failed.len(),
            failed.join(", "),
            waves.max_failures
        ));
    }
    // A canary without a verified success counts against max_failures too:
    // a failure report can be deleted or held back, a success cannot be made up.
    let silent: Vec<&str> = canaries
        .iter()
        .map(String::as_str)
        .filter(|c| !failed.contains(c) && !succeeded.iter().any(|(_, h)| h == c))
        .collect();
    let (first, who) = match succeeded.iter().min() {
        Some(&first) if failed.len() + silent.len() <= waves.max_failures => first,
        _ if silent.is_empty() => {
            return Err(format!(
                "canary waves: no canary node deployed {commit} ({} failed)",
                failed.join(", ")
            ));
        }
        _ => {
            return Err(format!(
                "canary waves: waiting for {} to report deploying {commit} ({} failed; \
                 max_failures: {} may fail or stay silent)",
                silent.join(", "),
                failed.len(),
                waves.max_failures
            ));
        }
    };
    let until = first.checked_add(waves.wait);
    if until.is_none_or(|until| now < until) {
        return Err(format!(
            "canary waves: {who} deployed {commit} at {}; the others wait until {}",
            rfc3339(first),
            until.map_or_else(|| "the end of time".to_owned(), rfc3339)
        ));
    }
    Ok(())
}

/// A time for messages; one past the year 9999 (a wait of millennia) has
/// no RFC 3339 form.
fn rfc3339(time: SystemTime) -> String {
    let mut text = String::new();
    match write!(text, "{}", humantime::format_rfc3339_seconds(time)) {
        Ok(()) => text,
        Err(_) => "after the year 9999".to_owned(),
    }
}

/// Whether the node named `hostname` is inside `percent` of the fleet.
pub fn takes(hostname: &str, percent: f64) -> bool {
    position(hostname) < percent
}

/// The node's place in the fleet, in [0, 100), from a hash of its name.
fn position(hostname: &str) -> f64 {
    let digest = Sha256::digest(
        hostname
            .trim_end_matches('.')
            .to_ascii_lowercase()
            .as_bytes(),
    );
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 10_000) as f64 / 100.0
}

/// The name the node places itself by: `TROOPS_HOSTNAME`, else the kernel's.
pub fn hostname() -> String {
    std::env::var("TROOPS_HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .map(|h| h.to_string_lossy().into_owned())
        })
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_parse() {
        assert_eq!(parse("rollout: 25\n"), Ok(Some(Rollout::Fraction(25.0))));
        assert_eq!(
            parse("rollout: '12.5%'\n"),
            Ok(Some(Rollout::Fraction(12.5)))
        );
        assert_eq!(parse("# nothing\n"), Ok(None));
        assert_eq!(parse(""), Ok(None));
        assert!(parse("rollout: 120\n").is_err());
        assert!(parse("rollout: lots\n").is_err());
        assert!(parse("rolout: 5\n").is_err());
    }

    #[test]
    fn waves_parse() {
        assert_eq!(
            parse("rollout: {canary: 5%, wait: 30min, max_failures: 1}\n"),
            Ok(Some(Rollout::Waves(Waves {
                canary: 5.0,
                wait: Duration::from_secs(1800),
                max_failures: 1
            })))
        );
        assert_eq!(
            parse("rollout:\n  canary: 10\n"),
            Ok(Some(Rollout::Waves(Waves {
                canary: 10.0,
                wait: Duration::ZERO,
                max_failures: 0
            })))
        );
        for (bad, says) in [
            ("rollout: {wait: 1h}\n", "rollout.canary"),
            ("rollout: {canary: 5%, wait: soon}\n", "rollout.wait"),
            (
                "rollout: {canary: 5%, max_failures: -1}\n",
                "rollout.max_failures",
            ),
            ("rollout: {canary: 150%}\n", "rollout.canary"),
            ("rollout: {canary: 5%, waves: 3}\n", "rollout.waves"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    fn received(hostname: &str, json: serde_json::Value, verified: bool) -> Received {
        let mut report = serde_json::json!({"version": 1, "hostname": hostname,
            "reported_at": "2026-01-01T00:00:00Z", "heartbeat_seconds": 3600});
        report
            .as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        Received {
            hostname: hostname.to_owned(),
            report: Ok(serde_json::from_value(report).unwrap()),
            verified: if verified {
                Ok(())
            } else {
                Err("not signed".into())
            },
        }
    }

    #[test]
    fn the_rest_follow_verified_canary_successes_after_the_wait() {
        let c = "c".repeat(40);
        let waves = Waves {
            canary: 10.0,
            wait: Duration::from_secs(600),
            max_failures: 1,
        };
        let canaries = ["a".to_owned(), "b".to_owned(), "d".to_owned()];
        let ok = |h: &str, v: bool| {
            received(
                h,
                serde_json::json!({"deployed": {"commit": c, "at": "2026-01-01T00:00:00Z"}}),
                v,
            )
        };
        let failed = |h: &str| {
            received(
                h,
                serde_json::json!({"last_deploy": {"commit": c, "result": "failure",
                "trigger": "pull", "finished_at": "2026-01-01T00:00:00Z", "reason": "boom"}}),
                true,
            )
        };
        let start = humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let later = start + Duration::from_secs(601);
        let decide_at = |reports: &[Received], now| decide(&c, &canaries, reports, &waves, now);
        // Nobody reported, or only unverified or non-canary reports: hold.
        assert!(decide_at(&[], later).is_err());
        assert!(decide_at(&[ok("a", false), ok("z", true)], later).is_err());
        // Verified successes: hold until the wait has passed.
        let all_ok = [ok("a", true), ok("b", true), ok("d", true)];
        let e = decide_at(&all_ok, start + Duration::from_secs(60)).unwrap_err();
        assert!(e.contains("wait until"), "{e}");
        assert_eq!(decide_at(&all_ok, later), Ok(()));
        // Reports three heartbeats old are silence: the canaries may have moved on.
        let e = decide_at(&all_ok, start + Duration::from_secs(3 * 3600 + 1)).unwrap_err();
        assert!(e.contains("waiting for a, b, d"), "{e}");
        // One failure is allowed, two are not.
        assert_eq!(
            decide_at(&[ok("a", true), failed("b"), ok("d", true)], later),
            Ok(())
        );
        let e = decide_at(&[ok("a", true), failed("b"), failed("d")], later).unwrap_err();
        assert!(
            e.contains("2 canary node(s) failed") && e.contains("b, d"),
            "{e}"
        );
        // A silent canary counts as a failure: deleting or holding back a
        // failing canary's report lets nobody through.
        assert_eq!(decide_at(&[ok("a", true), ok("d", true)], later), Ok(()));
        let e = decide_at(&[ok("a", true), failed("b")], later).unwrap_err();
        assert!(e.contains("waiting for d"), "{e}");
        let e = decide_at(&[ok("a", true)], later).unwrap_err();
        assert!(e.contains("waiting for b, d"), "{e}");
        // Failures alone never let anyone through, whatever max_failures says.
        let lenient = Waves {
            max_failures: 3,
            ..waves.clone()
        };
        let e = decide(&c, &canaries, &[failed("b")], &lenient, later).unwrap_err();
        assert!(e.contains("waiting for a, d"), "{e}");
        let e = decide(
            &c,
            &canaries,
            &[failed("a"), failed("b"), failed("d")],
            &lenient,
            later,
        )
        .unwrap_err();
        assert!(e.contains("no canary node deployed"), "{e}");
    }

    #[test]
    fn a_wait_of_millennia_holds_back_without_a_panic() {
        let c = "c".repeat(40);
        let report = received(
            "a",
            serde_json::json!({"deployed": {"commit": c, "at": "2026-01-01T00:00:00Z"}}),
            true,
        );
        for wait in ["8000years", "300000000000years"] {
            let Some(Rollout::Waves(waves)) =
                parse(&format!("rollout: {{canary: 5%, wait: {wait}}}\n")).unwrap()
            else {
                panic!("{wait}");
            };
            let now = humantime::parse_rfc3339("2026-01-01T00:10:00Z").unwrap();
            let e = decide(
                &c,
                &["a".to_owned()],
                std::slice::from_ref(&report),
                &waves,
                now,
            )
            .unwrap_err();
            assert!(e.contains("wait until"), "{e}");
        }
    }

    #[test]
    fn a_fleet_always_has_a_canary() {
        let fleet: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
        let one = canaries(&fleet, 0.0);
        assert_eq!(one.len(), 1);
        assert_eq!(canaries(&fleet, 0.01), one);
        assert_eq!(canaries(&fleet, 100.0), fleet);
        assert!(canaries(&[], 50.0).is_empty());
    }

    #[test]
    fn the_first_fraction_stays_inside_larger_ones() {
        let names: Vec<String> = (0..200).map(|i| format!("node-{i}.example.com")).collect();
        let at = |p: f64| {
            names
                .iter()
                .filter(|n| takes(n, p))
                .cloned()
                .collect::<Vec<_>>()
        };
        let (quarter, half) = (at(25.0), at(50.0));
        assert!(quarter.iter().all(|n| half.contains(n)));
        assert!((30..=70).contains(&quarter.len()), "{}", quarter.len());
        assert_eq!(at(100.0).len(), 200);
        assert!(at(0.0).is_empty());
    }
}
