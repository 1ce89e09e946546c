//! The same workload applied to N namespaced nodes by Troops and its peers.
//!
//! The workload is a directory (0755) and K files with given content and
//! modes under the node's own /srv. It is applied to N nodes (the tests'
//! namespaced sshd nodes on loopback, each with its own /srv) by:
//!
//! - `troops push --canary 100% --parallel N` of a deployment whose deploy.py
//!   (bench/fleet/troops_deploy.py) uses PyDebianAdmin's `files` helpers, with
//!   the wheel bundled on the nodes (/usr/share/troops/wheels);
//! - ansible-playbook (ansible-core from PyPI, bench/fleet/playbook.yml):
//!   pipelining on, ControlMaster/ControlPersist as ansible's defaults, no
//!   fact gathering, forks = N;
//! - pyinfra (from PyPI, bench/fleet/pyinfra_deploy.py), --parallel N;
//! - the floor: `ssh NODE python3 -c SCRIPT` per node, all at once
//!   (bench/fleet/floor.py with the workload inlined).
//!
//! All connect as alice through the same ssh configuration (Host aliases
//! fleet-1..fleet-8). Each tool gets its own directory per (K, N), so its
//! first run really creates everything. Then the no-change run: for Troops a
//! new commit whose workload is unchanged (a comment edit), so every file is
//! checked again; for the peers the same command again. Pushing the same
//! commit once more (nothing to deploy) is a row of its own, as is the
//! no-change push with the default rollout (canary 1, then doubling waves).
//! Every run is verified on every node: the directory and each file's content
//! and mode, and after a no-change run the same inode, mtime and ctime for
//! every file (nothing rewritten or touched).
//!
//! Each no-change run also reports the CPU time the whole machine used while
//! it ran (/proc/stat): the client and every node share these cores, so N
//! nodes cannot finish faster than N nodes' CPU time spread over them, and
//! the 8-versus-1 goal is printed beside that bound.
//!
//! Troops' first run of each (K, N) starts on nodes without a virtualenv,
//! so it pays what a new node pays: building the environment (no pip, the
//! bundled PyDebianAdmin unpacked from its wheel).
//!
//! Needs root (the nodes), python3-venv and PyPI for the peers, which are
//! installed once into target/bench-fleet/tools by bench/fleet/setup-tools.
//!
//! ```text
//! cargo bench --bench fleet                      # K in {10, 100}, N in {1, 4, 8}
//! cargo bench --bench fleet -- --quick           # K=10, N=1
//! cargo bench --bench fleet -- --k 100 --n 1,8 --tools troops,pyinfra,floor --runs 3
//! ```
//!
//! FLEET_K, FLEET_N, FLEET_TOOLS and FLEET_RUNS do the same as the options.
//! --runs R repeats each no-change run R times and reports the median. Troops
//! and the floor take a second or so, so they repeat at least 5 times
//! whatever R says: single runs of them on a shared 2-core machine vary by a
//! third, and the 8-versus-1 goal compares two of them.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{Client, NodeOptions, SshNode};
use common::{DeployRepo, clean_command};
use serde_json::json;

const TOOLS: &[&str] = &["troops", "ansible", "pyinfra", "floor"];
const DIR_MODE: &str = "0755";
const FILE_MODES: &[&str] = &["0644", "0640", "0600", "0664"];

struct Options {
    ks: Vec<usize>,
    ns: Vec<usize>,
    tools: Vec<String>,
    runs: usize,
}

fn list(text: &str) -> Vec<usize> {
    text.split(',')
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {v}"))
        })
        .collect()
}

fn options() -> Options {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut o = Options {
        ks: env("FLEET_K").map_or(vec![10, 100], |v| list(&v)),
        ns: env("FLEET_N").map_or(vec![1, 4, 8], |v| list(&v)),
        tools: env("FLEET_TOOLS").map_or(TOOLS.iter().map(|t| t.to_string()).collect(), |v| {
            v.split(',').map(str::to_owned).collect()
        }),
        runs: env("FLEET_RUNS").map_or(1, |v| v.parse().unwrap()),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || {
            args.get(i + 1)
                .unwrap_or_else(|| panic!("{} needs a value", args[i]))
                .clone()
        };
        match args[i].as_str() {
            "--quick" => {
                o.ks = vec![10];
                o.ns = vec![1];
            }
            "--k" => {
                o.ks = list(&value());
                i += 1;
            }
            "--n" => {
                o.ns = list(&value());
                i += 1;
            }
            "--tools" => {
                o.tools = value().split(',').map(str::to_owned).collect();
                i += 1;
            }
            "--runs" => {
                o.runs = value().parse().unwrap();
                i += 1;
            }
            // cargo bench passes --bench; anything else is a mistake.
            "--bench" => {}
            other => panic!(
                "unknown argument {other}; use --quick, --k LIST, --n LIST, --tools LIST, --runs R"
            ),
        }
        i += 1;
    }
    for tool in &o.tools {
        assert!(TOOLS.contains(&tool.as_str()), "unknown tool {tool}");
    }
    assert!(o.runs >= 1);
    assert!(o.ns.iter().all(|&n| (1..=8).contains(&n)), "N is 1 to 8");
    o
}

impl Options {
    /// How many no-change runs `tool` gets.
    fn runs_of(&self, tool: &str) -> usize {
        match tool {
            "troops" | "floor" => self.runs.max(FAST_RUNS),
            _ => self.runs,
        }
    }
}

/// The least number of no-change runs of the tools that take about a second.
const FAST_RUNS: usize = 5;

fn top() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The workload for one tool at one (K, N), as every tool reads it.
fn workload(dir: &str, k: usize) -> serde_json::Value {
    let files: Vec<serde_json::Value> = (0..k)
        .map(|i| {
            let mut content = format!("# fleet benchmark file {i}\n");
            for j in 0..16 {
                writeln!(content, "option_{j} = value-{i}-{j}").unwrap();
            }
            json!({
                "name": format!("file-{i:03}.conf"),
                "content": content,
                "mode": FILE_MODES[i % FILE_MODES.len()],
            })
        })
        .collect();
    json!({"dir": dir, "dir_mode": DIR_MODE, "files": files})
}

/// (inode, mtime, ctime) of each file, in workload order.
type Snapshot = Vec<(u64, i64, i64, i64, i64)>;

/// Checks the workload on `node` (read from the host through the node's srv)
/// and returns what identifies each file's current version.
fn verify(node: &SshNode, work: &serde_json::Value) -> Result<Snapshot, String> {
    let srv = node.dir.path().join("srv");
    let dir = srv.join(work["dir"].as_str().unwrap().trim_start_matches("/srv/"));
    let mode = |m: &serde_json::Value| u32::from_str_radix(m.as_str().unwrap(), 8).unwrap();
    let meta = fs::metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() || meta.mode() & 0o7777 != mode(&work["dir_mode"]) {
        return Err(format!(
            "{}: mode {:o}",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    let mut snapshot = Vec::new();
    for file in work["files"].as_array().unwrap() {
        let path = dir.join(file["name"].as_str().unwrap());
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() || meta.mode() & 0o7777 != mode(&file["mode"]) {
            return Err(format!(
                "{} on {}: mode {:o}, want {}",
                path.display(),
                node.hostname,
                meta.mode() & 0o7777,
                file["mode"]
            ));
        }
        let content = fs::read(&path).unwrap();
        if content != file["content"].as_str().unwrap().as_bytes() {
            return Err(format!(
                "{} on {}: wrong content",
                path.display(),
                node.hostname
            ));
        }
        snapshot.push((
            meta.ino(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        ));
    }
    Ok(snapshot)
}

struct Bench {
    client: Client,
    nodes: Vec<SshNode>,
    /// `ssh -F CONFIG`, the configuration naming fleet-1.. for alice.
    ssh: String,
    config: PathBuf,
    work: tempfile::TempDir,
    tools: PathBuf,
    repo: DeployRepo,
    commits: usize,
}

impl Bench {
    fn aliases(&self, n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("fleet-{i}")).collect()
    }

    fn write_workload(&self, name: &str, work: &serde_json::Value) -> PathBuf {
        let path = self.work.path().join(format!("{name}.json"));
        fs::write(&path, serde_json::to_string_pretty(work).unwrap()).unwrap();
        path
    }

    /// Commits the Troops deployment of `work` (with a comment that differs
    /// each time, so each call makes a new commit of the same workload).
    fn troops_commit(&mut self, work: &serde_json::Value) -> String {
        self.commits += 1;
        let deploy = fs::read_to_string(top().join("bench/fleet/troops_deploy.py")).unwrap();
        let deploy = format!("{deploy}\n# commit {}\n", self.commits);
        self.repo.commit(&[
            ("deploy.py", &deploy),
            ("requirements.txt", "PyDebianAdmin\n"),
            (
                "workload.py",
                &format!(
                    "WORKLOAD = {}\n",
                    serde_json::to_string_pretty(work).unwrap()
                ),
            ),
        ])
    }

    /// Makes the first `n` nodes fresh for Troops: no virtualenv built yet,
    /// so a first run pays for its environment as a new node does.
    fn forget_virtualenvs(&self, n: usize) {
        for node in &self.nodes[..n] {
            let venvs = node.lib().join("cache/venvs");
            for entry in fs::read_dir(&venvs).unwrap() {
                let path = entry.unwrap().path();
                if path.is_symlink() {
                    fs::remove_file(&path).unwrap();
                } else {
                    fs::remove_dir_all(&path).unwrap();
                }
            }
        }
    }

    fn troops_push(&self, n: usize, canary: Option<&str>) -> Duration {
        let mut cmd = clean_command(env!("CARGO_BIN_EXE_troops"), self.client.dir.path());
        cmd.env("GIT_SSH_COMMAND", &self.ssh)
            .arg("push")
            .arg("--repository")
            .arg(self.repo.path())
            .arg("--log-dir")
            .arg(self.work.path().join("troops-logs"))
            .arg("--json")
            .args(["--parallel", &n.to_string()]);
        if let Some(canary) = canary {
            cmd.args(["--canary", canary]);
        }
        cmd.args(self.aliases(n));
        let (elapsed, out) = timed(cmd);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert!(
            out.status.success() && json["result"] == "success",
            "troops push failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        elapsed
    }

    fn ansible(&self, n: usize, workload: &Path) -> Duration {
        let inventory = self.work.path().join(format!("ansible-{n}.ini"));
        fs::write(&inventory, self.aliases(n).join("\n") + "\n").unwrap();
        let cfg = self.work.path().join(format!("ansible-{n}.cfg"));
        fs::write(
            &cfg,
            format!(
                "[defaults]\nforks = {n}\nhost_key_checking = True\n\
                 interpreter_python = /usr/bin/python3\nretry_files_enabled = False\n\
                 local_tmp = {tmp}/ansible-local\n\
                 [ssh_connection]\npipelining = True\n\
                 ssh_args = -F {config} -o ControlMaster=auto -o ControlPersist=60s\n\
                 control_path_dir = {tmp}/ansible-cp\n",
                tmp = self.work.path().display(),
                config = self.config.display(),
            ),
        )
        .unwrap();
        let mut cmd = clean_command(
            self.tools.join("ansible-core/bin/ansible-playbook"),
            self.client.dir.path(),
        );
        cmd.env("ANSIBLE_CONFIG", &cfg)
            .env("LC_ALL", "C.UTF-8")
            .arg("-i")
            .arg(&inventory)
            .arg("-e")
            .arg(format!("@{}", workload.display()))
            .arg(top().join("bench/fleet/playbook.yml"));
        let (elapsed, out) = timed(cmd);
        assert!(
            out.status.success(),
            "ansible-playbook failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        elapsed
    }

    fn pyinfra(&self, n: usize, workload: &Path) -> Duration {
        let inventory = self.work.path().join(format!("pyinfra_inventory_{n}.py"));
        let mut hosts = String::from("hosts = [\n");
        for alias in self.aliases(n) {
            writeln!(
                hosts,
                "    ({alias:?}, {{\"ssh_config_file\": {config:?}, \"ssh_strict_host_key_checking\": \"yes\", \
                 \"ssh_known_hosts_file\": {known:?}}}),",
                config = self.config.display().to_string(),
                known = self.client.dir.path().join("known_hosts").display().to_string(),
            )
            .unwrap();
        }
        hosts.push_str("]\n");
        fs::write(&inventory, hosts).unwrap();
        let mut cmd = clean_command(
            self.tools.join("pyinfra/bin/pyinfra"),
            self.client.dir.path(),
        );
        cmd.env("FLEET_WORKLOAD", workload)
            .env("LC_ALL", "C.UTF-8")
            .current_dir(self.work.path())
            .args(["-y", "--parallel", &n.to_string()])
            .arg(&inventory)
            .arg(top().join("bench/fleet/pyinfra_deploy.py"));
        let (elapsed, out) = timed(cmd);
        assert!(
            out.status.success(),
            "pyinfra failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        elapsed
    }

    fn floor(&self, n: usize, work: &serde_json::Value) -> Duration {
        let script = format!(
            "WORKLOAD = {}\n{}",
            serde_json::to_string(work).unwrap(),
            fs::read_to_string(top().join("bench/fleet/floor.py")).unwrap()
        );
        let remote = format!("python3 -c {}", shell_quote(&script));
        let started = Instant::now();
        let children: Vec<_> = self
            .aliases(n)
            .iter()
            .map(|alias| {
                let mut cmd = clean_command("ssh", self.client.dir.path());
                cmd.args(self.ssh.split(' ').skip(1))
                    .arg(alias)
                    .arg(&remote)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect();
        let outputs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let elapsed = started.elapsed();
        for out in outputs {
            assert!(
                out.status.success(),
                "floor failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        elapsed
    }

    fn verify_all(&self, n: usize, work: &serde_json::Value, what: &str) -> Vec<Snapshot> {
        self.nodes[..n]
            .iter()
            .map(|node| verify(node, work).unwrap_or_else(|e| panic!("{what}: {e}")))
            .collect()
    }

    fn verify_unchanged(
        &self,
        n: usize,
        work: &serde_json::Value,
        before: &[Snapshot],
        what: &str,
    ) {
        let after = self.verify_all(n, work, what);
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            let changed = b.iter().zip(a).filter(|(x, y)| x != y).count();
            assert_eq!(
                changed, 0,
                "{what}: {changed} file(s) rewritten or touched on {}",
                self.nodes[i].hostname
            );
        }
    }
}

fn timed(mut cmd: Command) -> (Duration, std::process::Output) {
    cmd.stdin(Stdio::null());
    let started = Instant::now();
    let out = cmd.output().unwrap();
    (started.elapsed(), out)
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// One row of results: wall times of the first and the no-change run, and
/// the CPU time the no-change run took (all processes, client and nodes).
#[derive(Clone, Copy)]
struct Cell {
    first: Option<Duration>,
    nochange: Duration,
    cpu: Duration,
}

/// The cell of a first run and the (wall, CPU) times of the no-change runs:
/// the median of each.
fn cell(first: Option<Duration>, runs: Vec<(Duration, Duration)>) -> Cell {
    let (walls, cpus) = runs.into_iter().unzip();
    Cell {
        first,
        nochange: common::timing::median(walls),
        cpu: common::timing::median(cpus),
    }
}

/// Results by (K, N, row).
type Table = BTreeMap<(usize, usize, usize), Cell>;

/// CPU time every process on the machine has used so far (/proc/stat).
///
/// The nodes share the machine, so the CPU a run costs, client and nodes
/// together, is the difference around it (the machine is otherwise idle).
fn machine_cpu() -> Duration {
    let stat = fs::read_to_string("/proc/stat").unwrap();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: u64 = fields[..8]
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    Duration::from_millis(busy * 1000 / ticks)
}

/// Runs `f`, which returns its wall time; gives that and the CPU it used.
fn with_cpu(f: impl FnOnce() -> Duration) -> (Duration, Duration) {
    let before = machine_cpu();
    let wall = f();
    (wall, machine_cpu().saturating_sub(before))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

const ROWS: &[&str] = &[
    "troops push",
    "troops push, same commit again",
    "troops push, default waves (canary 1)",
    "ansible-playbook",
    "pyinfra",
    "floor (ssh python3 -c)",
];

fn main() {
    let o = options();
    assert!(
        nix::unistd::geteuid().is_root(),
        "the fleet benchmark starts namespaced nodes: run it as root"
    );
    let tools = if o.tools.iter().any(|t| t == "ansible" || t == "pyinfra") {
        common::peer_tools()
    } else {
        top().join("target/bench-fleet/tools")
    };

    // The PyDebianAdmin wheel, bundled on the nodes as the package does.
    let wheels = common::bundled_wheels();
    let wheel_files: Vec<PathBuf> = fs::read_dir(wheels.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // Declared before the nodes, so dropped after them, even on a panic.
    let _share = ShareTroops {
        made: !Path::new("/usr/share/troops").exists(),
    };

    let max_n = *o.ns.iter().max().unwrap();
    let client = Client::new();
    eprintln!("fleet: starting {max_n} node(s)");
    let node_options = NodeOptions {
        srv: true,
        wheels: wheel_files,
        sftp: true,
    };
    let nodes: Vec<SshNode> = (1..=max_n)
        .map(|i| SshNode::start_with(&format!("fleet-{i}.example.com"), &client, &node_options))
        .collect();
    let aliases: Vec<(String, &SshNode)> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (format!("fleet-{}", i + 1), node))
        .collect();
    let aliases: Vec<(&str, &SshNode)> = aliases.iter().map(|(a, n)| (a.as_str(), *n)).collect();
    let ssh = client.ssh_with_aliases("alice", &aliases);
    let config = PathBuf::from(ssh.trim_start_matches("ssh -F "));
    let mut bench = Bench {
        client,
        nodes,
        ssh,
        config,
        work: tempfile::tempdir().unwrap(),
        tools,
        repo: DeployRepo::new(),
        commits: 0,
    };

    let mut table = Table::new();
    for &k in &o.ks {
        for &n in &o.ns {
            for tool in &o.tools {
                let name = format!("{tool}-k{k}-n{n}");
                let work = workload(&format!("/srv/{name}"), k);
                let path = bench.write_workload(&name, &work);
                let all = format!("{}%", 100);
                // Wall and CPU time of one run (a new commit for Troops first,
                // outside the measurement).
                let run = |bench: &mut Bench| -> (Duration, Duration) {
                    if tool == "troops" {
                        bench.troops_commit(&work);
                    }
                    with_cpu(|| match tool.as_str() {
                        "troops" => bench.troops_push(n, Some(&all)),
                        "ansible" => bench.ansible(n, &path),
                        "pyinfra" => bench.pyinfra(n, &path),
                        "floor" => bench.floor(n, &work),
                        _ => unreachable!(),
                    })
                };
                eprintln!("fleet: K={k} N={n} {tool}: first run");
                if tool == "troops" {
                    bench.forget_virtualenvs(n);
                }
                let (first, _) = run(&mut bench);
                let before = bench.verify_all(n, &work, &format!("{name} first run"));
                let mut runs = Vec::new();
                for r in 0..o.runs_of(tool) {
                    eprintln!("fleet: K={k} N={n} {tool}: no-change run {}", r + 1);
                    runs.push(run(&mut bench));
                    bench.verify_unchanged(n, &work, &before, &format!("{name} no-change run"));
                }
                let row = match tool.as_str() {
                    "troops" => 0,
                    "ansible" => 3,
                    "pyinfra" => 4,
                    _ => 5,
                };
                table.insert((k, n, row), cell(Some(first), runs));
                if tool == "troops" {
                    let mut same = Vec::new();
                    let mut waves = Vec::new();
                    for _ in 0..o.runs_of(tool) {
                        eprintln!("fleet: K={k} N={n} troops: same commit again");
                        same.push(with_cpu(|| bench.troops_push(n, Some(&all))));
                        bench.verify_unchanged(n, &work, &before, &format!("{name} same commit"));
                        eprintln!("fleet: K={k} N={n} troops: no-change run, default waves");
                        bench.troops_commit(&work);
                        waves.push(with_cpu(|| bench.troops_push(n, None)));
                        bench.verify_unchanged(n, &work, &before, &format!("{name} default waves"));
                    }
                    table.insert((k, n, 1), cell(None, same));
                    table.insert((k, n, 2), cell(None, waves));
                }
            }
        }
    }

    print_table(&o, &table);

    // Dropping the nodes kills their namespaces; the peers' ssh masters
    // (ControlPersist) end with their connections.
}

/// Removes the mount point /usr/share/troops/wheels the nodes made on the
/// host, if it was not there before.
struct ShareTroops {
    made: bool,
}

impl Drop for ShareTroops {
    fn drop(&mut self) {
        if !self.made {
            return;
        }
        // The nodes' namespaces (and their mounts) go away asynchronously.
        for _ in 0..50 {
            let _ = fs::remove_dir("/usr/share/troops/wheels");
            if fs::remove_dir("/usr/share/troops").is_ok()
                || !Path::new("/usr/share/troops").exists()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("fleet: could not remove /usr/share/troops (made for the nodes)");
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64()))
}

fn ratio(a: Option<Duration>, b: Option<Duration>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.1}x", a.as_secs_f64() / b.as_secs_f64()),
        _ => "-".to_owned(),
    }
}

fn print_table(o: &Options, table: &Table) {
    println!();
    println!(
        "fleet benchmark: a directory and K files (content, mode) on N nodes; wall seconds; \
         ratio = tool / troops push (same K, N, run); no-change runs: median of {} \
         (of {} for troops and the floor); \
         cpu = CPU seconds of the no-change run, client and nodes together, on {} cores",
        o.runs,
        o.runs_of("troops"),
        cores()
    );
    println!(
        "{:>4} {:>2}  {:<40} {:>9} {:>8} {:>10} {:>8} {:>7}",
        "K", "N", "tool", "first s", "ratio", "no-chg s", "ratio", "cpu s"
    );
    let mut last = None;
    for (&(k, n, row), c) in table {
        if last.is_some_and(|l| l != (k, n)) {
            println!();
        }
        last = Some((k, n));
        let troops = table.get(&(k, n, 0));
        let versus = |mine: Option<Duration>, theirs: Option<Duration>| {
            if row == 0 {
                String::new()
            } else {
                ratio(mine, theirs)
            }
        };
        println!(
            "{k:>4} {n:>2}  {:<40} {:>9} {:>8} {:>10} {:>8} {:>7}",
            ROWS[row],
            secs(c.first),
            versus(c.first, troops.and_then(|t| t.first)),
            secs(Some(c.nochange)),
            versus(Some(c.nochange), troops.map(|t| t.nochange)),
            secs(Some(c.cpu)),
        );
    }
    println!();
    print_goals(o, table);
}

/// The goals of issues 7 (no-change runs) and 14 (first runs), for K=100.
fn print_goals(o: &Options, table: &Table) {
    let get = |k, n, row| table.get(&(k, n, row));
    let over = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    for &n in &o.ns {
        let Some(t) = get(100, n, 0) else { continue };
        if let (Some(first), Some(floor)) = (t.first, get(100, n, 5).and_then(|f| f.first)) {
            let r = over(first, floor);
            println!(
                "goal K=100 N={n} first run (fresh nodes): troops / floor = {r:.1} (<= 5: {})",
                yes(r <= 5.0)
            );
        }
        if let (1, Some(first)) = (n, t.first) {
            let extra = first.as_secs_f64() - t.nochange.as_secs_f64();
            println!(
                "goal K=100 N=1 first run: {extra:.2} s more than a no-change run (<= 1: {})",
                yes(extra <= 1.0)
            );
        }
        if let Some(a) = get(100, n, 3) {
            let r = over(a.nochange, t.nochange);
            println!(
                "goal K=100 N={n} no-change: ansible / troops = {r:.1} (>= 20: {})",
                yes(r >= 20.0)
            );
        }
        if let Some(p) = get(100, n, 4) {
            let r = over(p.nochange, t.nochange);
            println!(
                "goal K=100 N={n} no-change: pyinfra / troops = {r:.1} (>= 5: {})",
                yes(r >= 5.0)
            );
        }
        if let Some(f) = get(100, n, 5) {
            let r = over(t.nochange, f.nochange);
            println!(
                "goal K=100 N={n} no-change: troops / floor = {r:.1} (<= 5: {})",
                yes(r <= 5.0)
            );
        }
    }
    for &k in &o.ks {
        for (row, name) in [(0, "troops push"), (5, "floor")] {
            let (Some(one), Some(eight)) = (get(k, 1, row), get(k, 8, row)) else {
                continue;
            };
            let r = over(eight.nochange, one.nochange);
            // All eight nodes share this machine's cores: the run cannot take
            // less than its CPU time spread over them.
            let bound = over(eight.cpu / cores() as u32, one.nochange).max(1.0);
            let goal = if row == 0 {
                format!(" (<= 2.5: {})", yes(r <= 2.5))
            } else {
                String::new()
            };
            println!(
                "goal K={k} no-change: {name} to 8 / to 1 = {r:.2}{goal}; \
                 its CPU alone makes it >= {bound:.2} on {} cores",
                cores()
            );
        }
    }
}

fn yes(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}
