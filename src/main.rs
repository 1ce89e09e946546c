//! Troops: deploy Debian machines from a git repository of plain Python.
//!
//! `main` parses the command line, dispatches to the subcommand's module and
//! maps the outcome to an exit status (see `error`).

#[macro_use]
mod error;
mod access;
mod check;
mod cli;
mod config;
mod deploy;
mod engine;
mod failpoint;
mod fleet;
mod generate;
mod git;
mod history;
mod imds;
mod init;
mod instance;
mod lock;
mod metrics;
mod paths;
mod publish;
mod pull;
mod push;
mod push_hook;
mod python;
mod remotes;
mod report;
mod roles;
mod rollout;
mod safe_directory;
mod seed;
mod seed_doc;
mod signatures;
mod status;
mod stream;
mod transfer;
mod venv;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Command};
use paths::Node;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => ExitCode::from(error::report(&err) as u8),
    }
}

fn run(cli: Cli) -> Result<()> {
    let node = Node::new(&std::path::absolute(&cli.root)?);
    // What may deploy or pull leaves the node's metrics (and its report, if
    // it has a report remote) current, whatever the outcome; only root
    // writes them.
    let deploys = matches!(
        cli.command,
        Command::Deploy(_)
            | Command::Pull(_)
            | Command::Seed(_)
            | Command::Hook(_)
            | Command::Check(_)
    );
    let result = dispatch(&node, cli.command);
    if deploys && nix::unistd::geteuid().is_root() && node.state().is_dir() {
        match status::Snapshot::read(&node) {
            Ok(state) => {
                metrics::update(&node, &state);
                report::update(&node, &state);
            }
            Err(e) => eprintln!(
                "troops: warning: cannot read the node's state for its metrics and report: {e:#}"
            ),
        }
    }
    result
}

fn dispatch(node: &Node, command: Command) -> Result<()> {
    match command {
        Command::Init(args) => init::run(node, args),
        Command::Deploy(args) => deploy::run(node, args),
        Command::Check(args) => check::run(node, args),
        Command::Pull(args) => pull::run(node, args),
        Command::Publish(args) => publish::run(node, args),
        Command::Push(args) => push::run(node, args),
        Command::Seed(args) => seed::run(node, args),
        Command::Status(args) => status::run(node, args),
        Command::Fleet(args) => fleet::run(args),
        Command::Roles(args) => roles::roles(node, args),
        Command::Hosts(args) => roles::hosts(node, args),
        Command::Hook(args) => push_hook::run(node, args),
        Command::Guard(args) => stream::guard(args),
        Command::Generate(args) => generate::run(args, <Cli as clap::CommandFactory>::command()),
    }
}

/// A reader that went away (`troops status | head`) is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
