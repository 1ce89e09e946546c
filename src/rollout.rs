//! Gradual rollout for pull fleets: `troops.yaml`'s `rollout` percentage.
//!
//! A deployment commit may ask that only a fraction of nodes take it. Each
//! node places itself by a stable hash of its hostname (not of the commit),
//! so the nodes inside 25% are still inside 50%, and a later commit with a
//! larger fraction widens the same set. troops.yaml is read from the commit
//! without running any Python.

use anyhow::{Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::UserError;
use crate::git::{Repo, short};

/// The top-level keys of troops.yaml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentFile {
    rollout: Option<Percent>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Percent {
    Number(f64),
    Text(String),
}

/// The commit's rollout percentage, if its troops.yaml sets one.
pub fn fraction(repo: &Repo, commit: &str) -> Result<Option<f64>> {
    let mut cmd = repo.command();
    cmd.args(["cat-file", "blob", &format!("{commit}:troops.yaml")]);
    let out = cmd.output().context("cannot run git cat-file")?;
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    parse(&text).map_err(|e| {
        UserError::new(format!(
            "invalid troops.yaml in commit {}: {e}",
            short(commit)
        ))
        .hint("`rollout` takes a percentage: `rollout: 25` or `rollout: \"25%\"`")
        .into()
    })
}

fn parse(text: &str) -> std::result::Result<Option<f64>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let file: DeploymentFile = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    let Some(percent) = file.rollout else {
        return Ok(None);
    };
    let value = match percent {
        Percent::Number(n) => n,
        Percent::Text(t) => t
            .trim()
            .trim_end_matches('%')
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("`rollout: {t}` is not a percentage"))?,
    };
    if !(0.0..=100.0).contains(&value) {
        return Err(format!("`rollout: {value}` is not between 0 and 100"));
    }
    Ok(Some(value))
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
        assert_eq!(parse("rollout: 25\n"), Ok(Some(25.0)));
        assert_eq!(parse("rollout: '12.5%'\n"), Ok(Some(12.5)));
        assert_eq!(parse("# nothing\n"), Ok(None));
        assert_eq!(parse(""), Ok(None));
        assert!(parse("rollout: 120\n").is_err());
        assert!(parse("rollout: lots\n").is_err());
        assert!(parse("rolout: 5\n").is_err());
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
