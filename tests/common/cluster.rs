//! Simulated nodes: each in its own mount, UTS and pid namespace, with its
//! own hostname, /var/lib/troops, /etc/troops, users and sudoers, serving
//! real sshd on its own 127.0.0.x address. Dropping a node kills its
//! namespace (and so every process in it); its mounts vanish with it.
//!
//! Needs root, `unshare`, sshd and sudo. The mount points /var/lib/troops and
//! /etc/troops (and, for `NodeOptions::wheels`, /usr/share/troops/wheels)
//! are created (empty) on the host if missing.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{Run, clean_command};

/// Users every node knows: (name, uid, member of troops).
pub const USERS: &[(&str, u32, bool)] = &[
    ("alice", 2001, true),
    ("bob", 2002, true),
    ("mallory", 2003, false),
];
const TROOPS_GID: u32 = 2000;

static NEXT_ADDRESS: AtomicU8 = AtomicU8::new(0);

pub struct SshNode {
    pub dir: TempDir,
    pub hostname: String,
    pub addr: Ipv4Addr,
    pub port: u16,
    child: Child,
}

/// The client side: keys for each user and an ssh configuration.
pub struct Client {
    pub dir: TempDir,
}

impl Client {
    pub fn new() -> Client {
        let client = Client {
            dir: tempfile::tempdir().unwrap(),
        };
        for (user, _, _) in USERS {
            keygen(&client.key(user));
        }
        fs::write(client.dir.path().join("known_hosts"), "").unwrap();
        client
    }

    pub fn key(&self, user: &str) -> PathBuf {
        self.dir.path().join(format!("id_{user}"))
    }

    /// A command whose ssh (and git's) logs in as `user` with its key.
    pub fn command(&self, program: &str, user: &str) -> Command {
        let mut cmd = clean_command(program, self.dir.path());
        cmd.env("GIT_SSH_COMMAND", self.ssh_command(user));
        cmd
    }

    pub fn ssh_command(&self, user: &str) -> String {
        format!(
            "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes \
             -o UserKnownHostsFile={} -o ConnectTimeout=10 -i {}",
            self.dir.path().join("known_hosts").display(),
            self.key(user).display()
        )
    }

    /// An ssh command whose configuration names each node by an alias
    /// (`Host ALIAS`, logging in as `user`): what an admin's ~/.ssh/config does.
    pub fn ssh_with_aliases(&self, user: &str, nodes: &[(&str, &SshNode)]) -> String {
        let mut config = String::new();
        for (alias, node) in nodes {
            config.push_str(&format!(
                "Host {alias}\n  HostName {}\n  Port {}\n  User {user}\n",
                node.addr, node.port
            ));
        }
        config.push_str(&format!(
            "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  BatchMode yes\n  StrictHostKeyChecking yes\n  UserKnownHostsFile {}\n",
            self.key(user).display(),
            self.dir.path().join("known_hosts").display()
        ));
        let path = self.dir.path().join(format!("ssh_config_{user}"));
        fs::write(&path, config).unwrap();
        format!("ssh -F {}", path.display())
    }

    /// `ssh USER@NODE COMMAND...`
    pub fn ssh(&self, node: &SshNode, user: &str, command: &[&str]) -> Run {
        let mut cmd = clean_command("ssh", self.dir.path());
        cmd.args(self.ssh_command(user).split(' ').skip(1))
            .args(["-p", &node.port.to_string()])
            .arg(format!("{user}@{}", node.addr))
            .args(command);
        Run::from(cmd.output().unwrap())
    }

    /// A new bare repository NAME.git in `user`'s home on `server`: its URL.
    pub fn bare_repository(&self, server: &SshNode, user: &str, name: &str) -> String {
        self.ssh(
            server,
            user,
            &["git", "init", "--quiet", "--bare", &format!("{name}.git")],
        )
        .success();
        format!("ssh://{user}@{}:{}/~/{name}.git", server.addr, server.port)
    }

    /// `git push --quiet URL master` from `repo`, as `user`.
    pub fn push_to(&self, user: &str, repo: &Path, url: &str) -> Run {
        let out = self
            .command("git", user)
            .arg("-C")
            .arg(repo)
            .args(["push", "--quiet", url, "master"])
            .output()
            .unwrap();
        Run::from(out)
    }

    /// `git push` from `repo` to NODE's repository as `user`.
    pub fn push(&self, node: &SshNode, user: &str, repo: &Path, args: &[&str]) -> Run {
        let out = self
            .command("git", user)
            .arg("-C")
            .arg(repo)
            .arg("push")
            .args(args)
            .arg(node.url(user))
            .arg("master")
            .output()
            .unwrap();
        Run::from(out)
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// Optional extras for a node (`SshNode::start_with`); the default is what
/// `SshNode::start` gives.
#[derive(Default)]
pub struct NodeOptions {
    /// Give the node its own /srv (empty, owned by alice, 0755), so that
    /// workloads on different nodes do not collide.
    pub srv: bool,
    /// Wheel files the node sees in /usr/share/troops/wheels (the package's
    /// bundled wheels). The mount point is created on the host if missing.
    pub wheels: Vec<PathBuf>,
    /// Serve SFTP (`Subsystem sftp internal-sftp`), as a stock sshd does.
    pub sftp: bool,
}

impl SshNode {
    /// Starts a node named `hostname` that `client`'s users can reach.
    pub fn start(hostname: &str, client: &Client) -> SshNode {
        SshNode::start_with(hostname, client, &NodeOptions::default())
    }

    /// As `start`, with the extras in `options`.
    pub fn start_with(hostname: &str, client: &Client, options: &NodeOptions) -> SshNode {
        let n = NEXT_ADDRESS.fetch_add(1, Ordering::SeqCst);
        let addr = Ipv4Addr::new(127, 0, 0, 10 + n);
        let port = free_port(addr);
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        for path in [
            "var/lib/troops",
            "etc/troops",
            "etc/sudoers.d",
            "etc/ssh",
            "home",
        ] {
            fs::create_dir_all(dir.path().join(path)).unwrap();
            fs::create_dir_all(Path::new("/").join(path)).unwrap();
        }
        fs::set_permissions(
            dir.path().join("etc/sudoers.d"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        write_accounts(dir.path(), client);
        if options.srv {
            // node-init mounts it over /srv.
            let srv = dir.path().join("srv");
            fs::create_dir(&srv).unwrap();
            let alice = USERS.iter().find(|u| u.0 == "alice").unwrap().1;
            chown(&srv, Some(alice), Some(alice)).unwrap();
            fs::set_permissions(&srv, fs::Permissions::from_mode(0o755)).unwrap();
        }
        if !options.wheels.is_empty() {
            // node-init mounts it over /usr/share/troops/wheels.
            let wheels = dir.path().join("wheels");
            fs::create_dir(&wheels).unwrap();
            for wheel in &options.wheels {
                fs::copy(wheel, wheels.join(wheel.file_name().unwrap())).unwrap();
            }
        }
        fs::write(
            dir.path().join("etc/hosts"),
            format!("127.0.0.1 localhost\n{addr} {hostname}\n"),
        )
        .unwrap();
        let host_key = dir.path().join("etc/ssh/host_key");
        keygen(&host_key);
        write_sshd_config(dir.path(), addr, port, &host_key);
        if options.sftp {
            let config = dir.path().join("etc/ssh/sshd_config");
            let mut text = fs::read_to_string(&config).unwrap();
            text.push_str("Subsystem sftp internal-sftp\n");
            fs::write(config, text).unwrap();
        }
        let public = fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let mut known = fs::OpenOptions::new()
            .append(true)
            .open(client.dir.path().join("known_hosts"))
            .unwrap();
        std::io::Write::write_all(&mut known, format!("[{addr}]:{port} {public}").as_bytes())
            .unwrap();

        // The users must be able to run it, wherever the build directory is.
        let troops = dir.path().join("troops");
        fs::copy(env!("CARGO_BIN_EXE_troops"), &troops).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/node-init");
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--uts",
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
            ])
            .arg("--")
            .arg(script)
            .arg(dir.path())
            .arg(hostname)
            .arg(&troops)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("node.log")).unwrap())
            .spawn()
            .unwrap();
        let node = SshNode {
            dir,
            hostname: hostname.to_owned(),
            addr,
            port,
            child,
        };
        node.wait_for_sshd();
        node
    }

    fn wait_for_sshd(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(SocketAddrV4::new(self.addr, self.port)).is_err() {
            let log = fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "node {} did not start:\n{log}",
                self.hostname
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `troops ARGS...` as root inside the node's namespaces.
    pub fn troops_inside(&self, args: &[&str]) -> Run {
        let me = self.child.id();
        let children = fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap();
        let init = children
            .split_whitespace()
            .next()
            .expect("the node's init is gone");
        let out = clean_command("nsenter", self.dir.path())
            .args(["--target", init, "--mount", "--uts", "--pid", "--"])
            .arg(self.troops())
            .args(args)
            .output()
            .unwrap();
        Run::from(out)
    }

    /// The process that holds the node's namespaces (its processes descend
    /// from it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The node's public SSH key, which it fetches with.
    pub fn public_key(&self) -> String {
        fs::read_to_string(self.lib().join("ssh/id_ed25519.pub")).unwrap()
    }

    /// The node's own host key line, for another node's known hosts.
    pub fn known_host_line(&self) -> String {
        let public = fs::read_to_string(self.dir.path().join("etc/ssh/host_key.pub")).unwrap();
        format!("[{}]:{} {public}", self.addr, self.port)
    }

    /// Lets `user` log in to this node with `public_key`.
    pub fn authorize(&self, user: &str, public_key: &str) {
        let path = self
            .dir
            .path()
            .join("home")
            .join(user)
            .join(".ssh/authorized_keys");
        let mut keys = fs::read_to_string(&path).unwrap();
        keys.push_str(public_key);
        fs::write(path, keys).unwrap();
    }

    /// Makes this node trust `other`'s host key (system-wide known hosts).
    pub fn trust_host(&self, other: &SshNode) {
        let path = self.dir.path().join("etc/ssh/ssh_known_hosts");
        let mut lines = fs::read_to_string(&path).unwrap_or_default();
        lines.push_str(&other.known_host_line());
        fs::write(path, lines).unwrap();
    }

    /// Runs git on the members' repository, from the host.
    pub fn git(&self, args: &[&str]) -> Run {
        let out = clean_command("git", self.dir.path())
            .arg("--git-dir")
            .arg(self.lib().join("repo/main.git"))
            .args(args)
            .output()
            .unwrap();
        Run::from(out)
    }

    /// The node's troops executable (what its hooks and sudoers name).
    pub fn troops(&self) -> String {
        self.dir
            .path()
            .join("troops")
            .to_string_lossy()
            .into_owned()
    }

    pub fn url(&self, user: &str) -> String {
        format!(
            "ssh://{user}@{}:{}/var/lib/troops/repo/main.git",
            self.addr, self.port
        )
    }

    /// The node's /var/lib/troops as seen from the host.
    pub fn lib(&self) -> PathBuf {
        self.dir.path().join("var/lib/troops")
    }

    /// The commit the node's deploy branch (root's repository) names, if any.
    pub fn branch(&self) -> Option<String> {
        let out = clean_command("git", self.dir.path())
            .arg("--git-dir")
            .arg(self.lib().join("deploy.git"))
            .args(["rev-parse", "--verify", "--quiet", "refs/heads/master"])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `troops status --json` of the node, read from the host.
    pub fn status(&self) -> serde_json::Value {
        let out = clean_command(env!("CARGO_BIN_EXE_troops"), self.dir.path())
            .arg("--root")
            .arg(self.dir.path())
            .args(["status", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn deployed(&self) -> Option<String> {
        self.status()["commit"].as_str().map(str::to_owned)
    }
}

impl Drop for SshNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port(addr: Ipv4Addr) -> u16 {
    TcpListener::bind(SocketAddrV4::new(addr, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The host's accounts plus the test users and the group troops.
fn write_accounts(dir: &Path, client: &Client) {
    let etc = dir.join("etc");
    let mut passwd = fs::read_to_string("/etc/passwd").unwrap();
    let mut shadow = fs::read_to_string("/etc/shadow").unwrap();
    let mut group: String = fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("troops:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let members: Vec<&str> = USERS.iter().filter(|u| u.2).map(|u| u.0).collect();
    group.push_str(&format!("troops:x:{TROOPS_GID}:{}\n", members.join(",")));
    for (user, uid, _) in USERS {
        let home = dir.join("home").join(user);
        passwd.push_str(&format!(
            "{user}:x:{uid}:{uid}::{}:/bin/sh\n",
            home.display()
        ));
        shadow.push_str(&format!("{user}:*:19000:0:99999:7:::\n"));
        group.push_str(&format!("{user}:x:{uid}:\n"));
        let ssh = home.join(".ssh");
        fs::create_dir_all(&ssh).unwrap();
        let public = fs::read_to_string(client.key(user).with_extension("pub")).unwrap();
        fs::write(ssh.join("authorized_keys"), public).unwrap();
        for path in [&home, &ssh, &ssh.join("authorized_keys")] {
            chown(path, Some(*uid), Some(*uid)).unwrap();
        }
    }
    fs::write(etc.join("passwd"), passwd).unwrap();
    fs::write(etc.join("shadow"), shadow).unwrap();
    fs::set_permissions(etc.join("shadow"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(etc.join("group"), group).unwrap();
}

fn write_sshd_config(dir: &Path, addr: Ipv4Addr, port: u16, host_key: &Path) {
    let config = format!(
        "ListenAddress {addr}:{port}\n\
         HostKey {key}\n\
         PidFile none\n\
         UsePAM no\n\
         StrictModes no\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         AuthorizedKeysFile .ssh/authorized_keys\n\
         SetEnv GIT_CONFIG_SYSTEM={gitconfig}\n\
         LogLevel ERROR\n",
        key = host_key.display(),
        gitconfig = dir.join("etc/gitconfig").display()
    );
    fs::write(dir.join("etc/ssh/sshd_config"), config).unwrap();
}
