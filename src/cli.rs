//! The command line: global options and one subcommand per user task.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{
    check, deploy, fleet, generate, init, publish, pull, push, push_hook, roles, seed, status,
    stream,
};

/// Deploy Debian machines from a git repository of plain Python
///
/// Each node keeps a bare git repository at /var/lib/troops/repo/main.git.
/// A deployment is a git repository with deploy.py and requirements.txt;
/// `git push` to a node deploys the pushed commit there, and `troops pull`
/// deploys what the node's remotes fast-forward to. Nothing is central.
#[derive(Debug, Parser)]
#[command(
    name = "troops",
    version,
    propagate_version = true,
    after_long_help = CONFIGURATION
)]
pub struct Cli {
    /// Put every Troops path under DIR (DIR/var/lib/troops, DIR/etc/troops)
    #[arg(
        long,
        global = true,
        env = "TROOPS_ROOT",
        default_value = "/",
        value_name = "DIR"
    )]
    pub root: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

/// The node configuration's keys, for `troops --help` and the man page.
const CONFIGURATION: &str = "\
Node configuration, /etc/troops/troops.toml (every key optional):
  branch = \"master\"             the branch pushes and pulls deploy
  roles = [\"web\"]               roles the node has whatever deploy.py says
  python = \"/usr/bin/python3\"   the interpreter virtualenvs are made from
  signatures = \"none\"           or \"ssh\" or \"gpg\": deploy signed commits only
  allowed_signers = PATH        trusted SSH keys [/etc/troops/allowed_signers]
  gpg_home = PATH               trusted GnuPG keyring [/etc/troops/gnupg]
  deploy_timeout = \"1h\"         how long a deploy may run
  [report]
  url = URL                     where the node pushes its status reports
  heartbeat = \"1h\"              report at least this often";

#[derive(Debug, Subcommand)]
pub enum Command {
    Init(init::Args),
    Deploy(deploy::Args),
    Pull(pull::Args),
    Check(check::Args),
    Push(push::Args),
    Publish(publish::Args),
    Seed(seed::Args),
    Status(status::Args),
    Fleet(fleet::Args),
    Roles(roles::RolesArgs),
    Hosts(roles::HostsArgs),
    #[command(hide = true)]
    Hook(push_hook::Args),
    #[command(hide = true)]
    Generate(generate::Args),
    #[command(hide = true)]
    Guard(stream::GuardArgs),
}
