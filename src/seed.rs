//! `troops seed`: first-boot configuration from a preseed file, cloud-init
//! or EC2 user-data, then the first pull.
//!
//! Sources are tried in order and the first that carries a seed wins. The
//! whole document is validated before anything is written, so a bad seed
//! changes nothing; applying is idempotent (seeding twice changes nothing the
//! second time). Once applied, `state/seeded` records the instance, so the
//! first-boot unit (which runs at every boot) seeds each instance once: a
//! seed drive left attached does not seed again, a new instance made from an
//! image of a seeded node does, and gets a node key of its own.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::config::Policy;
use crate::error::UserError;
use crate::git;
use crate::paths::{Node, set_mode, write_atomically, write_atomically_mode};
use crate::seed_doc::{self, Seed};
use crate::{imds, init, instance, pull, remotes};

/// Configure this node from its seed (first boot), then pull
///
/// Reads the seed from, in this order: --file PATH, /etc/troops/seed.yaml
/// (what a preseed late_command writes), cloud-init's NoCloud seed
/// (/var/lib/cloud/seed/nocloud*/user-data), cloud-init's saved user-data
/// (/var/lib/cloud/instance/user-data.txt), and EC2's metadata service with
/// IMDSv2. The metadata service is asked only on EC2 (by DMI) or when
/// --imds-url is given.
///
/// The seed is a YAML document whose key `troops` holds `remotes` (a list of
/// {name, url}), `roles`, `branch`, `signatures` (none, ssh, gpg),
/// `allowed_signers`, `gpg_keys`, `pull_interval`, `known_hosts` (git
/// servers' host keys, pinned in /etc/troops/known_hosts) and `https_ca`
/// (the one CA the seed's HTTPS remotes, such as static mirrors, must chain
/// to: /etc/troops/https-ca.pem); user-data may also
/// be a #cloud-config whose write_files writes /etc/troops/seed.yaml. Every
/// value is checked before anything is applied. Remotes go to root's
/// /etc/troops/gitconfig (0600), since their URLs may carry credentials.
///
/// A seed applies once per instance (cloud-init's instance id, else the
/// firmware's product UUID, else /etc/machine-id): run again on the same
/// instance it does nothing, unless --file is given. On a new instance (made
/// from an image of a node) the node's key is replaced and printed first.
/// User-data that is not for Troops (a script, another cloud-init format)
/// means no seed: exit 0.
///
/// Example: `troops seed --file seed.yaml`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read the seed from PATH instead of looking for it
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// The metadata service to ask (always asked when given)
    #[arg(long, value_name = "URL")]
    imds_url: Option<String>,
    /// Apply the seed but do not run the first pull
    #[arg(long, conflicts_with = "start_pull")]
    no_pull: bool,
    /// Start the first pull as the systemd unit UNIT and return at once
    ///
    /// The boot unit troops-seed.service passes troops-first-pull.service,
    /// so that a slow first deploy does not hold the rest of the boot (its
    /// output is in `journalctl -u troops-first-pull`). Where systemd cannot
    /// start it (no systemd running), the pull runs here instead.
    #[arg(long, value_name = "UNIT", value_parser = unit_name)]
    start_pull: Option<String>,
}

const DEFAULT_IMDS: &str = "http://169.254.169.254";

pub fn run(node: &Node, args: Args) -> Result<()> {
    let instance = instance::id(node);
    if let Some(public) = init::renew_key_for_this_instance(node)? {
        eprintln!(
            "troops: seed: this is a new instance: made it a key of its own; \
             authorize it where it fetches: {public}"
        );
    }
    // At boot the unit runs every time: a seed applies once per instance
    // (a seed drive left attached does not seed again). Asked with --file,
    // it applies.
    let here = instance.clone().unwrap_or_default();
    if args.file.is_none() && seeded_instance(node, &here).as_deref() == Some(here.as_str()) {
        eprintln!("troops: seed: this instance is seeded already; nothing to do");
        return Ok(());
    }
    protect_seed_copy(node)?;
    let Some((source, seed)) = find(node, &args)? else {
        eprintln!("troops: seed: no seed configuration found; nothing to do");
        return Ok(());
    };
    apply(node, &seed, &source, instance.as_deref())?;
    eprintln!("troops: seed: applied the seed from {source}");
    if args.no_pull || seed.remotes.is_empty() && !has_remotes(node)? {
        return Ok(());
    }
    if let Some(unit) = &args.start_pull {
        match start_unit(node, unit) {
            Ok(()) => {
                eprintln!(
                    "troops: seed: started the first pull as {unit}; \
                     follow it with `journalctl -u {unit}`"
                );
                return Ok(());
            }
            Err(why) => {
                eprintln!("troops: seed: warning: could not start {unit} ({why:#}); pulling here")
            }
        }
    }
    let pull_args = pull::Args {
        json: false,
        no_wait: false,
        timeout: 60,
        deploy_timeout: None,
        first: true,
    };
    pull::run(node, pull_args)
}

/// A unit name as `--start-pull` takes it: a service, not an option.
fn unit_name(name: &str) -> Result<String, String> {
    let stem = name.strip_suffix(".service").unwrap_or_default();
    let valid = !stem.is_empty()
        && !stem.starts_with('-')
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if valid {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "`{name}` is not a service unit name (e.g. troops-first-pull.service)"
        ))
    }
}

/// Queue `unit` with systemd without waiting for it. Only on the real
/// root: a relocated node has no systemd of its own.
fn start_unit(node: &Node, unit: &str) -> Result<()> {
    if node.root() != Path::new("/") {
        anyhow::bail!("the node is relocated with --root");
    }
    let out = Command::new("systemctl")
        .args(["start", "--no-block", "--", unit])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run systemctl")?;
    if !out.status.success() {
        anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The first source that carries a seed, with its description.
fn find(node: &Node, args: &Args) -> Result<Option<(String, Seed)>> {
    if let Some(file) = &args.file {
        let text = fs::read_to_string(file)
            .with_context(|| format!("cannot read the seed file `{}`", file.display()))?;
        let seed = parse(&text, &file.display().to_string())?.ok_or_else(|| {
            user_error!(
                "`{}` is a cloud-config without a Troops seed",
                file.display()
            )
        })?;
        return Ok(Some((format!("`{}`", file.display()), seed)));
    }
    let root = node.root();
    let files = [
        node.seed_file(),
        root.join("var/lib/cloud/seed/nocloud/user-data"),
        root.join("var/lib/cloud/seed/nocloud-net/user-data"),
        root.join("var/lib/cloud/instance/user-data.txt"),
    ];
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        if let Some(seed) = parse(&text, &file.display().to_string())? {
            return Ok(Some((format!("`{}`", file.display()), seed)));
        }
    }
    let url = match &args.imds_url {
        Some(url) => url.clone(),
        None if on_ec2(root) => DEFAULT_IMDS.to_owned(),
        None => return Ok(None),
    };
    let data = match imds::user_data(&url) {
        Ok(data) => data,
        // Explicitly asked: the admin wants to know. Guessed from DMI: boot on.
        Err(e) if args.imds_url.is_some() => {
            return Err(e.context(format!("cannot read user-data from {url}")));
        }
        Err(e) => {
            eprintln!("troops: seed: warning: no user-data from {url}: {e:#}");
            return Ok(None);
        }
    };
    let Some(text) = data else { return Ok(None) };
    Ok(parse(&text, &format!("user-data from {url}"))?
        .map(|seed| (format!("user-data from {url}"), seed)))
}

fn parse(text: &str, source: &str) -> Result<Option<Seed>> {
    seed_doc::from_user_data(text).map_err(|e| {
        UserError::new(format!("invalid seed in {source}: {e}"))
            .hint("nothing was applied; fix the seed (see `troops seed --help`) and run `troops seed` again")
            .into()
    })
}

/// EC2 instances say so in their DMI data; elsewhere IMDS is not asked.
fn on_ec2(root: &Path) -> bool {
    let dmi = root.join("sys/class/dmi/id");
    [
        "sys_vendor",
        "bios_vendor",
        "product_name",
        "board_asset_tag",
    ]
    .iter()
    .any(|name| {
        fs::read_to_string(dmi.join(name))
            .map(|v| v.contains("Amazon") || v.trim_start().starts_with("i-"))
            .unwrap_or(false)
    })
}

fn has_remotes(node: &Node) -> Result<bool> {
    Ok(!remotes::list(node)?.is_empty())
}

/// Writes everything the seed says. Steps that can fail for outside reasons
/// (gpg) run before anything is changed; each write replaces a whole file.
fn apply(node: &Node, seed: &Seed, source: &str, instance: Option<&str>) -> Result<()> {
    let keyring = if seed.gpg_keys.is_empty() {
        None
    } else {
        Some(build_keyring(node, &seed.gpg_keys)?)
    };
    write_config(node, seed)?;
    // Creates the layout (`init` is idempotent) with the branch just written.
    init::run(node, init::Args {})?;
    if !seed.allowed_signers.is_empty() {
        let mut text = seed.allowed_signers.join("\n");
        text.push('\n');
        write_atomically_mode(&node.etc().join("allowed_signers"), text.as_bytes(), 0o644)?;
    }
    if !seed.known_hosts.is_empty() {
        let mut text = seed.known_hosts.join("\n");
        text.push('\n');
        write_atomically_mode(&node.known_hosts(), text.as_bytes(), 0o644)?;
    }
    if let Some(keyring) = keyring {
        replace_dir(&keyring, &node.etc().join("gnupg"))?;
    }
    if let Some(ca) = &seed.https_ca {
        pin_https_ca(node, ca, &seed.remotes)?;
    }
    for remote in &seed.remotes {
        set_git_config(node, &format!("remote.{}.url", remote.name), &remote.url)?;
    }
    if let Some(span) = &seed.pull_interval {
        write_timer_dropin(node, span)?;
    }
    let seeded = node.state().join("seeded");
    let text = format!(
        "instance {}\nsource {source}\n",
        instance.unwrap_or_default()
    );
    write_atomically(&seeded, text.as_bytes())
}

/// The seed kept in /etc/troops/seed.yaml may name remotes with
/// credentials: it is root's alone, whoever wrote it (cloud-init's
/// `write_files` defaults to 0644).
fn protect_seed_copy(node: &Node) -> Result<()> {
    let path = node.seed_file();
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => set_mode(&path, 0o600),
        _ => Ok(()),
    }
}

/// The instance `state/seeded` says was seeded (empty when unknown), if any.
/// A file from before instances were recorded (0.1 wrote the source alone)
/// was written on this instance: it is taken as this one's.
fn seeded_instance(node: &Node, here: &str) -> Option<String> {
    let text = fs::read_to_string(node.state().join("seeded")).ok()?;
    let first = text.lines().next().unwrap_or_default();
    Some(match first.strip_prefix("instance ") {
        Some(id) => id.trim().to_owned(),
        None => here.to_owned(),
    })
}

/// Sets `branch`, `roles`, `signatures` and `report` in troops.toml, keeping
/// other keys.
fn write_config(node: &Node, seed: &Seed) -> Result<()> {
    let path = node.config_file();
    let mut table: toml::Table = match fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            UserError::new(format!("cannot update `{}`: {e}", path.display()))
                .hint("fix or remove the file, then run `troops seed` again")
        })?,
        Err(_) => toml::Table::new(),
    };
    if let Some(branch) = &seed.branch {
        table.insert("branch".into(), branch.clone().into());
    }
    if !seed.roles.is_empty() {
        table.insert("roles".into(), seed.roles.clone().into());
    }
    if let Some(policy) = seed.signatures {
        let word = match policy {
            Policy::None => "none",
            Policy::Ssh => "ssh",
            Policy::Gpg => "gpg",
        };
        table.insert("signatures".into(), word.into());
    }
    if let Some(report) = &seed.report {
        let mut section = toml::Table::new();
        section.insert("url".into(), report.url.clone().into());
        if let Some(heartbeat) = &report.heartbeat {
            section.insert("heartbeat".into(), heartbeat.clone().into());
        }
        table.insert("report".into(), section.into());
    }
    fs::create_dir_all(node.etc())?;
    let text = format!("# Written by `troops seed`; other keys are kept.\n{table}");
    write_atomically_mode(&path, text.as_bytes(), 0o644)
}

/// A new keyring with exactly the seed's keys, beside the real one.
fn build_keyring(node: &Node, keys: &[String]) -> Result<PathBuf> {
    fs::create_dir_all(node.etc())?;
    let dir = tempfile::Builder::new()
        .prefix(".gnupg-")
        .tempdir_in(node.etc())
        .context("cannot create a keyring directory")?;
    for key in keys {
        let mut child = Command::new("gpg")
            .arg("--homedir")
            .arg(dir.path())
            .args(["--batch", "--quiet", "--import"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| UserError::new(format!("cannot run gpg: {e}")).hint("install gnupg"))?;
        std::io::Write::write_all(&mut child.stdin.take().context("no stdin")?, key.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(UserError::new(format!(
                "invalid seed: `troops.gpg_keys`: gpg cannot import a key: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
            .into());
        }
    }
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(dir.path())
        .args(["--kill", "all"])
        .output();
    Ok(dir.keep())
}

fn replace_dir(new: &Path, old: &Path) -> Result<()> {
    let previous = old.with_extension("old");
    let _ = fs::remove_dir_all(&previous);
    if old.exists() {
        fs::rename(old, &previous)?;
    }
    fs::rename(new, old).with_context(|| format!("cannot install `{}`", old.display()))?;
    let _ = fs::remove_dir_all(&previous);
    Ok(())
}

/// Makes `ca` the only CA the seed's HTTPS remotes may chain to. git's
/// `http.sslCAInfo` alone adds to the system's store (curl still reads
/// /etc/ssl/certs), so `http.sslCAPath` names a directory without any; both
/// are set per URL, leaving other remotes (members' public ones) the
/// system's CAs.
fn pin_https_ca(node: &Node, ca: &str, remotes: &[seed_doc::Remote]) -> Result<()> {
    let file = node.etc().join("https-ca.pem");
    write_atomically_mode(&file, ca.as_bytes(), 0o644)?;
    let none = node.etc().join("https-ca.d");
    crate::paths::ensure_dir(&none, 0o755, nix::unistd::Gid::from_raw(0))?;
    for remote in remotes.iter().filter(|r| r.url.starts_with("https://")) {
        set_git_config(
            node,
            &format!("http.{}.sslCAInfo", remote.url),
            &file.to_string_lossy(),
        )?;
        set_git_config(
            node,
            &format!("http.{}.sslCAPath", remote.url),
            &none.to_string_lossy(),
        )?;
    }
    Ok(())
}

/// Sets `key` in root's `/etc/troops/gitconfig` (0600: remote URLs may
/// carry credentials), replacing any value it had.
fn set_git_config(node: &Node, key: &str, value: &str) -> Result<()> {
    let path = node.git_config();
    if !path.exists() {
        write_atomically_mode(
            &path,
            b"# Root's git configuration for pulls (troops seed).\n",
            0o600,
        )?;
    }
    set_mode(&path, 0o600)?;
    let mut cmd = git::pinned(None);
    cmd.args(["config", "--file"])
        .arg(&path)
        .args(["--replace-all", key, value]);
    git::output(&mut cmd).with_context(|| format!("cannot set `{key}` in `{}`", path.display()))?;
    Ok(())
}

/// How often the pull timer runs, as a drop-in for troops-pull.timer.
fn write_timer_dropin(node: &Node, span: &str) -> Result<()> {
    let dir = node.root().join("etc/systemd/system/troops-pull.timer.d");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let text = format!(
        "# Written by `troops seed` (pull_interval).\n[Timer]\nOnUnitActiveSec=\nOnUnitActiveSec={span}\n"
    );
    let path = dir.join("troops-seed.conf");
    if fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    write_atomically_mode(&path, text.as_bytes(), 0o644)?;
    if node.root() == Path::new("/") && Path::new("/run/systemd/system").exists() {
        let _ = Command::new("systemctl").arg("daemon-reload").status();
    }
    Ok(())
}
