//! `troops generate`: the man pages and shell completions the package ships,
//! made from the clap definitions so they never drift from `--help`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Write man pages or shell completions (used when building the package)
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Write troops.1 and one page per subcommand (troops-deploy.1, ...) into DIR
    Man { dir: PathBuf },
    /// Write the completion script for SHELL into DIR
    Completions {
        shell: clap_complete::Shell,
        dir: PathBuf,
    },
}

/// `cli` is the whole command line's definition (main passes it, so this
/// module needs nothing from `cli`, which names it).
pub fn run(args: Args, mut cli: clap::Command) -> Result<()> {
    match args.what {
        What::Man { dir } => man(cli, &dir),
        What::Completions { shell, dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
            clap_complete::generate_to(shell, &mut cli, "troops", &dir)
                .with_context(|| format!("cannot write completions into `{}`", dir.display()))?;
            Ok(())
        }
    }
}

fn man(cli: clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    clap_mangen::generate_to(cli, dir)
        .with_context(|| format!("cannot write man pages into `{}`", dir.display()))
}
