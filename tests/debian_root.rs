//! A real deploy inside a clean Debian root: requirements.txt names the
//! bundled PyDebianAdmin wheel (unpacked, no pip) and deploy.py installs
//! tmux with apt.

mod common;

use std::path::Path;
use std::process::Command;

use common::Run;

#[test]
fn deploy_installs_tmux_with_pydebianadmin_in_a_debian_root() {
    let top = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(top.join("tests/debroot/with-root"))
        .arg(top.join("tests/debroot/deploy-tmux"))
        .arg(env!("CARGO_BIN_EXE_troops"))
        .output()
        .unwrap();
    let run = Run::from(out).success();
    let output = format!("{}{}", run.stdout, run.stderr);
    let first = output.find("apt: installed tmux").expect(&output);
    let second = output.find("apt: tmux already installed").expect(&output);
    assert!(first < second, "{output}");
    // The bundled wheel is unpacked: no pip runs (it would say "Processing").
    assert!(
        output.contains("building a virtualenv") && !output.contains("Processing "),
        "{output}"
    );
    assert!(
        run.stdout.contains("dpkg: tmux install ok installed"),
        "{output}"
    );
}
