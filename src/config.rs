//! Node configuration: `/etc/troops/troops.toml`, written by seeding or by hand.
//!
//! A missing file means the defaults. Unknown keys are refused so that a typo
//! does not silently fall back to a default. The Python module reads the same
//! file (with `tomllib`) for the node's roles.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::error::UserError;
use crate::paths::Node;

/// The deploy branch when the configuration names none.
pub const DEFAULT_BRANCH: &str = "master";
/// The interpreter virtualenvs are built from when none is configured.
pub const DEFAULT_PYTHON: &str = "/usr/bin/python3";

/// What `signatures` in /etc/troops/troops.toml asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    #[default]
    None,
    Ssh,
    Gpg,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The branch pushes and pulls deploy.
    pub branch: Option<String>,
    /// Roles this node has whatever deploy.py says.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The python3 virtualenvs are made from.
    pub python: Option<PathBuf>,
    /// Whether deployed commits must be signed: `none`, `ssh` or `gpg`.
    #[serde(default)]
    pub signatures: Policy,
    /// Trusted SSH signers [default: /etc/troops/allowed_signers].
    pub allowed_signers: Option<PathBuf>,
    /// GnuPG home whose keyring is trusted [default: /etc/troops/gnupg].
    pub gpg_home: Option<PathBuf>,
    /// How long a deploy may run before it is stopped (a time span such as
    /// "30min") [default: 1h, room for a slow apt run].
    pub deploy_timeout: Option<String>,
    /// Where the node pushes its status reports (`troops fleet` reads them).
    pub report: Option<ReportRemote>,
}

/// `[report]`: the remote that status reports are pushed to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRemote {
    /// A git URL the node's key may push `refs/troops/status/HOSTNAME` to.
    pub url: String,
    /// How often a node reports when nothing changed [default: 1h].
    pub heartbeat: Option<String>,
}

/// How often a node reports when nothing changed, if `heartbeat` is unset.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(3600);

impl ReportRemote {
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
            .as_deref()
            .and_then(|span| humantime::parse_duration(span).ok())
            .unwrap_or(DEFAULT_HEARTBEAT)
    }
}

/// A deploy's time limit when the configuration sets none.
pub const DEFAULT_DEPLOY_TIMEOUT: Duration = Duration::from_secs(3600);

impl Config {
    pub fn load(node: &Node) -> Result<Config> {
        let path = node.config_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
        };
        let config: Config = toml::from_str(&text).map_err(|e| {
            UserError::new(format!(
                "invalid node configuration `{}`: {e}",
                path.display()
            ))
            .hint("fix the file; `troops --help` lists its keys")
        })?;
        if let Some(role) = config
            .roles
            .iter()
            .find(|r| r.is_empty() || r.contains(char::is_whitespace))
        {
            return Err(UserError::new(format!(
                "invalid role `{role}` in `{}`: a role is a non-empty name without spaces",
                path.display()
            ))
            .into());
        }
        if let Some(span) = &config.deploy_timeout {
            check_timeout(span).map_err(|e| {
                UserError::new(format!(
                    "invalid `deploy_timeout` in `{}`: {e}",
                    path.display()
                ))
            })?;
        }
        if let Some(report) = &config.report {
            check_report(report).map_err(|e| {
                UserError::new(format!("invalid `report` in `{}`: {e}", path.display()))
            })?;
        }
        if let Some(branch) = &config.branch {
            validate_branch(branch).map_err(|e| {
                UserError::new(format!("invalid `branch` in `{}`: {e}", path.display()))
            })?;
        }
        Ok(config)
    }

    /// How long a deploy may run (`deploy_timeout`, checked by `load`).
    pub fn deploy_timeout(&self) -> Duration {
        self.deploy_timeout
            .as_deref()
            .and_then(|span| humantime::parse_duration(span).ok())
            .unwrap_or(DEFAULT_DEPLOY_TIMEOUT)
    }

    /// Overrides `deploy_timeout` (a command's `--deploy-timeout`).
    pub fn set_deploy_timeout(&mut self, span: &str) -> Result<()> {
        check_timeout(span)
            .map_err(|e| UserError::new(format!("invalid --deploy-timeout: {e}")))?;
        self.deploy_timeout = Some(span.to_owned());
        Ok(())
    }

    pub fn branch(&self) -> &str {
        self.branch.as_deref().unwrap_or(DEFAULT_BRANCH)
    }

    pub fn python(&self) -> PathBuf {
        std::env::var_os("TROOPS_PYTHON")
            .map(PathBuf::from)
            .or_else(|| self.python.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PYTHON))
    }
}

/// A deploy time limit: a time span of at least a second.
fn check_timeout(span: &str) -> std::result::Result<(), String> {
    match humantime::parse_duration(span) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(()),
        Ok(_) => Err(format!("`{span}` is shorter than a second")),
        Err(e) => Err(format!(
            "`{span}` is not a time span like 30min or 2h ({e})"
        )),
    }
}

/// A report remote: a URL a remote may have, and a heartbeat of at least a
/// second.
pub fn check_report(report: &ReportRemote) -> std::result::Result<(), String> {
    crate::remotes::check("report", &report.url, crate::remotes::Source::Root)
        .map_err(|e| format!("`url`: {e}"))?;
    if crate::remotes::redact(&report.url) != report.url {
        return Err(
            "`url` carries credentials, and troops.toml is readable by all: put them in \
             /etc/troops/gitconfig (a credential helper), or use SSH"
                .to_owned(),
        );
    }
    if let Some(span) = &report.heartbeat {
        check_timeout(span).map_err(|e| format!("`heartbeat`: {e}"))?;
    }
    Ok(())
}

/// Refuses branch names git would reject or that could pass as an option.
pub fn validate_branch(name: &str) -> std::result::Result<(), String> {
    let bad = name.is_empty()
        || name.starts_with('-')
        || name.starts_with('/')
        || name.ends_with('/')
        || name.ends_with(".lock")
        || name.contains("..")
        || name.contains("//")
        || name.contains("@{")
        || name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
    if bad {
        Err(format!("`{name}` is not a valid branch name"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names() {
        for ok in ["master", "main", "release/2026", "env-prod"] {
            assert!(validate_branch(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-f", "a..b", "a b", "x.lock", "/x", "x/", "a:b", "a@{1}",
        ] {
            assert!(validate_branch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deploy_timeouts() {
        let c: Config = toml::from_str("deploy_timeout = '90s'").unwrap();
        assert_eq!(c.deploy_timeout(), Duration::from_secs(90));
        assert_eq!(Config::default().deploy_timeout(), DEFAULT_DEPLOY_TIMEOUT);
        for bad in ["soon", "0s", "-5min", ""] {
            assert!(check_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("brnach = 'x'").is_err());
        let c: Config = toml::from_str("branch = 'prod'\nroles = ['web']").unwrap();
        assert_eq!(c.branch(), "prod");
        assert_eq!(c.roles, ["web"]);
    }

    #[test]
    fn report_remotes() {
        let c: Config =
            toml::from_str("[report]\nurl = 'ssh://git@h/fleet.git'\nheartbeat = '10min'").unwrap();
        let report = c.report.unwrap();
        assert_eq!(report.heartbeat(), Duration::from_secs(600));
        assert!(check_report(&report).is_ok());
        for (url, heartbeat) in [
            ("https://bot:secret@h/fleet.git", "1h"),
            ("-oProxyCommand=x", "1h"),
            ("ext::sh", "1h"),
            ("ssh://h/r", "soon"),
        ] {
            let bad = ReportRemote {
                url: url.into(),
                heartbeat: Some(heartbeat.into()),
            };
            assert!(check_report(&bad).is_err(), "{url} {heartbeat}");
        }
        assert!(toml::from_str::<Config>("[report]\nurl = 'x'\nheartbaet = '1h'").is_err());
    }
}
