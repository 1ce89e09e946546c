//! The deploy history: one JSON record and one log per deploy.
//!
//! A record is written when a deploy starts (result `running`) and replaced
//! atomically when it ends, so a deploy killed halfway still leaves a trace.
//! Only the deploy-lock holder writes records; a `running` record found while
//! holding the lock belongs to a killed deploy and is closed as a failure.
//! `troops status --json` prints these records; its shape is in SPEC
//! "Interfaces": fields may be added, never renamed or removed.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::paths::{Node, write_atomically};

/// How many records (and logs) are kept.
const KEEP: usize = 100;
const RUNNING: &str = "running";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Push,
    Pull,
    Manual,
    Seed,
    /// `troops check`'s dry run, which is never recorded.
    Check,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Push => "push",
            Trigger::Pull => "pull",
            Trigger::Manual => "manual",
            Trigger::Seed => "seed",
            Trigger::Check => "check",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub commit: Option<String>,
    pub trigger: Trigger,
    pub user: String,
    pub started_at: String,
    pub duration_ms: u64,
    /// `success`, `failure`, or `running` while the deploy is under way.
    pub result: String,
    pub reason: Option<String>,
    pub log: PathBuf,
}

/// A deploy in progress: its record and its open log.
pub struct Entry {
    record: Record,
    path: PathBuf,
    started: SystemTime,
    pub log: fs::File,
}

impl Entry {
    /// Records the start of a deploy. Call with the deploy lock held.
    pub fn start(node: &Node, trigger: Trigger, user: &str) -> Result<Entry> {
        close_interrupted(node)?;
        let started = SystemTime::now();
        let millis = started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let id = format!("{millis:013}-{}", std::process::id());
        let log_path = node.logs_dir().join(format!("{id}.log"));
        let log = fs::File::create(&log_path)
            .with_context(|| format!("cannot create the deploy log `{}`", log_path.display()))?;
        let record = Record {
            id: id.clone(),
            commit: None,
            trigger,
            user: user.to_owned(),
            started_at: humantime::format_rfc3339_seconds(started).to_string(),
            duration_ms: 0,
            result: RUNNING.to_owned(),
            reason: None,
            log: log_path,
        };
        let entry = Entry {
            record,
            path: node.history_dir().join(format!("{id}.json")),
            started,
            log,
        };
        entry.save()?;
        Ok(entry)
    }

    pub fn set_commit(&mut self, commit: &str) -> Result<()> {
        self.record.commit = Some(commit.to_owned());
        self.save()
    }

    /// Closes the record with the deploy's outcome (`Err` holds the reason).
    pub fn finish(mut self, node: &Node, outcome: &Result<(), String>) -> Result<Duration> {
        let elapsed = self.started.elapsed().unwrap_or_default();
        self.record.duration_ms = elapsed.as_millis() as u64;
        match outcome {
            Ok(()) => self.record.result = "success".to_owned(),
            Err(reason) => {
                self.record.result = "failure".to_owned();
                self.record.reason = Some(reason.clone());
            }
        }
        self.save()?;
        prune(node)?;
        Ok(elapsed)
    }

    fn save(&self) -> Result<()> {
        write_atomically(&self.path, &serde_json::to_vec_pretty(&self.record)?)
    }
}

/// All records, newest first. Unreadable records are skipped, not fatal.
pub fn list(node: &Node) -> Result<Vec<Record>> {
    let mut records: Vec<Record> = record_paths(node)?
        .iter()
        .rev()
        .filter_map(|path| serde_json::from_slice(&fs::read(path).ok()?).ok())
        .collect();
    records.truncate(KEEP);
    Ok(records)
}

/// The newest readable record, if any.
pub fn latest(node: &Node) -> Result<Option<Record>> {
    Ok(record_paths(node)?
        .iter()
        .rev()
        .find_map(|path| serde_json::from_slice(&fs::read(path).ok()?).ok()))
}

/// Marks a record left `running` by a killed deploy as failed.
pub fn mark_interrupted(record: &mut Record) {
    if record.result == RUNNING {
        record.result = "failure".to_owned();
        record.reason = Some("interrupted: troops stopped before the deploy finished".to_owned());
    }
}

fn close_interrupted(node: &Node) -> Result<()> {
    for path in record_paths(node)? {
        let read = fs::read(&path)
            .map_err(anyhow::Error::from)
            .and_then(|data| serde_json::from_slice::<Record>(&data).map_err(anyhow::Error::from));
        let mut record = match read {
            Ok(record) => record,
            Err(e) => {
                eprintln!(
                    "troops: warning: skipping the unreadable history record `{}`: {e}",
                    path.display()
                );
                continue;
            }
        };
        if record.result == RUNNING {
            mark_interrupted(&mut record);
            write_atomically(&path, &serde_json::to_vec_pretty(&record)?)?;
        }
    }
    Ok(())
}

/// Record files, oldest first (ids sort by start time).
fn record_paths(node: &Node) -> Result<Vec<PathBuf>> {
    let dir = node.history_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", dir.display())),
    };
    // Only regular files: whatever else is there (a directory named *.json)
    // is not a record, and never stops a deploy.
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    Ok(paths)
}

fn prune(node: &Node) -> Result<()> {
    let paths = record_paths(node)?;
    for path in paths.iter().take(paths.len().saturating_sub(KEEP)) {
        let log = node
            .logs_dir()
            .join(path.with_extension("log").file_name().unwrap_or_default());
        let _ = fs::remove_file(log);
        fs::remove_file(path).with_context(|| format!("cannot remove `{}`", path.display()))?;
    }
    Ok(())
}

/// The commit whose deploy last succeeded on this node, if any.
pub fn deployed_commit(node: &Node) -> Result<Option<String>> {
    let path = node.deployed_file();
    match fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    }
}

pub fn set_deployed_commit(node: &Node, commit: &str) -> Result<()> {
    write_atomically(&node.deployed_file(), format!("{commit}\n").as_bytes())
}
