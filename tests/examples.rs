//! The shipped examples: cloud-init user-data and the preseed fragment are
//! accepted by cloud-init, debconf and `troops seed` alike.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Node, Run};

fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Present on a developer's machine maybe, under CI certainly.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v \"$1\"", "sh", tool])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found || std::env::var_os("CI").is_none(),
        "{tool} is missing under CI"
    );
    if !found {
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

const USER_DATA: [&str; 3] = [
    "cloud-init/user-data.yaml",
    "cloud-init/nocloud-user-data.yaml",
    "cloud-init/mirror-user-data.yaml",
];

#[test]
fn cloud_init_accepts_every_user_data_example() {
    if !have("cloud-init") {
        return;
    }
    for file in USER_DATA {
        let out = Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(example(file))
            .output()
            .unwrap();
        let run = Run::from(out);
        assert_eq!(run.code, Some(0), "{file}: {}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("Valid"), "{file}: {}", run.stdout);
    }
    // The check can fail: a wrong type is refused.
    let bad = tempfile::NamedTempFile::new().unwrap();
    fs::write(bad.path(), "#cloud-config\nwrite_files: 5\n").unwrap();
    let out = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(bad.path())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn troops_seed_applies_every_user_data_example() {
    for file in USER_DATA {
        let node = Node::new();
        let run = node
            .troops([
                "seed",
                "--no-pull",
                "--file",
                example(file).to_str().unwrap(),
            ])
            .success();
        assert!(
            run.stderr.contains("applied the seed"),
            "{file}: {}",
            run.stderr
        );
        let config = fs::read_to_string(node.root().join("etc/troops/troops.toml")).unwrap();
        assert!(config.contains("roles = ["), "{file}: {config}");
        // Seeded remotes are root's: /etc/troops/gitconfig, 0600.
        let gitconfig = node.root().join("etc/troops/gitconfig");
        let remotes = fs::read_to_string(&gitconfig).unwrap();
        assert!(remotes.contains("[remote \"origin\"]"), "{file}: {remotes}");
        let mode = fs::metadata(&gitconfig).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
        // Host keys and CAs are pinned by the seed, not scanned at boot.
        let text = fs::read_to_string(example(file)).unwrap();
        if text.contains("known_hosts:") {
            let known = fs::read_to_string(node.root().join("etc/troops/known_hosts")).unwrap();
            assert!(known.contains(" ssh-ed25519 "), "{file}: {known}");
        }
        if text.contains("https_ca:") {
            let ca = node.root().join("etc/troops/https-ca.pem");
            let pem = fs::read_to_string(&ca).unwrap();
            assert!(
                pem.starts_with("-----BEGIN CERTIFICATE-----\n"),
                "{file}: {pem}"
            );
            assert!(
                remotes.contains(&format!("sslCAInfo = {}", ca.display())),
                "{remotes}"
            );
            let config = fs::read_to_string(node.root().join("etc/troops/troops.toml")).unwrap();
            assert!(config.contains("signatures = \"ssh\""), "{file}: {config}");
        }
        assert!(
            text.contains("known_hosts:") || text.contains("https_ca:"),
            "{file} pins neither host keys nor a CA"
        );
        let scans = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains("ssh-keyscan"));
        assert!(!scans, "{file} scans host keys at boot");
    }
}

#[test]
fn debconf_accepts_the_preseed_fragment() {
    if !have("debconf-set-selections") {
        return;
    }
    let out = Command::new("debconf-set-selections")
        .arg("--checkonly")
        .arg(example("preseed/troops.cfg"))
        .output()
        .unwrap();
    Run::from(out).success();
    // The check can fail: a line without a type is refused.
    let bad = tempfile::NamedTempFile::new().unwrap();
    fs::write(bad.path(), "d-i preseed/late_command\n").unwrap();
    let out = Command::new("debconf-set-selections")
        .arg("--checkonly")
        .arg(bad.path())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
}
