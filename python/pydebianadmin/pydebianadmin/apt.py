"""Install and remove Debian packages with apt-get, and refresh its lists.

apt-get runs noninteractively and keeps locally changed conffiles. Held
packages (`apt-mark hold`) are never installed, upgraded or removed here: the
helper says it left them alone. Packages already installed are never upgraded.

At first boot apt races cloud-init and unattended-upgrades for dpkg's lock:
the helpers wait for it (at most LOCK_TIMEOUT seconds, saying who holds it),
and a dpkg run that was interrupted half-way is finished (`dpkg --configure
-a`) before anything is installed or removed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ._core import CommandError, Error, changed, command, dry_run, fail, report

LISTS = Path("/var/lib/apt/lists")
# apt keeps no record of when it last updated (list files carry the archive's
# date), so we touch the stamp Debian's and Ubuntu's periodic jobs use.
UPDATE_STAMP = Path("/var/lib/apt/periodic/update-success-stamp")

# How long a helper waits for another apt or dpkg to finish.
LOCK_TIMEOUT = 600
DPKG = Path("/var/lib/dpkg")
LOCK = DPKG / "lock-frontend"

APT_GET = [
    "apt-get",
    "-q",
    "-y",
    "-o", "Dpkg::Options::=--force-confdef",
    "-o", "Dpkg::Options::=--force-confold",
    # apt waits for the lock itself and names the process holding it.
    "-o", f"DPkg::Lock::Timeout={LOCK_TIMEOUT}",
]
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "APT_LISTCHANGES_FRONTEND": "none"}


@dataclass(frozen=True)
class PackageState:
    installed: bool
    held: bool


def install(*names: str) -> bool:
    """Install the packages not installed yet; True when apt-get installed any."""
    states = _states(names)
    wanted = [n for n in names if not states[n].installed and not states[n].held]
    held = [n for n in names if not states[n].installed and states[n].held]
    if wanted:
        _apt_get("install", wanted)
        done = f"{'would install' if dry_run() else 'installed'} {' '.join(wanted)}"
    else:
        done = f"{' '.join(n for n in names if n not in held)} already installed"
    _report_with_held(done if len(held) < len(names) else "", held, "installing", bool(wanted))
    return bool(wanted)


def remove(*names: str, purge: bool = False) -> bool:
    """Remove (or purge) the installed packages; True when apt-get removed any.

    With purge=True, packages removed earlier but whose conffiles remain are
    purged too.
    """
    states = _states(names)
    present = [n for n in names if states[n].installed or (purge and _has_conffiles(n))]
    wanted = [n for n in present if not states[n].held]
    held = [n for n in present if states[n].held]
    verb = "purge" if purge else "remove"
    if wanted:
        _apt_get(verb, wanted)
        done = f"{'would ' + verb if dry_run() else verb + 'd'} {' '.join(wanted)}"
    else:
        done = f"{' '.join(n for n in names if n not in held)} not installed"
    _report_with_held(done if len(held) < len(names) else "", held, "removing", bool(wanted))
    return bool(wanted)


def update(max_age: float = 3600) -> bool:
    """Refresh the package lists when missing or older than max_age seconds.

    True when it ran (or in a dry run would run) `apt-get update`.
    """
    age = _lists_age()
    if age is not None and age <= max_age:
        report("apt", f"package lists are fresh (updated {int(age)}s ago)")
        return False
    if dry_run():
        report("apt", "would update package lists")
        return True
    try:
        command([*APT_GET, "update"], env=APT_ENV)
    except CommandError as error:
        raise fail("apt", "update package lists", error) from error
    UPDATE_STAMP.parent.mkdir(parents=True, exist_ok=True)
    UPDATE_STAMP.touch()
    report("apt", "updated package lists")
    return True


def _states(names: tuple[str, ...]) -> dict[str, PackageState]:
    """Read dpkg's state of each package; unknown packages are not installed."""
    if not names:
        raise Error("apt: no package names given")
    # dpkg-query exits 1 when some names are unknown, yet prints the others.
    listing = command(
        ["dpkg-query", "-W", "-f", "${Package}\t${Status}\n", "--", *names], check=False
    ).stdout
    states = {name: PackageState(installed=False, held=False) for name in names}
    for row in listing.splitlines():
        package, _, status = row.partition("\t")
        want, _, current = status.split(" ", 2) if status.count(" ") >= 2 else ("", "", "")
        for name in names:
            if name.split(":", 1)[0] == package:
                states[name] = PackageState(installed=current == "installed", held=want == "hold")
    return states


def _has_conffiles(name: str) -> bool:
    """Whether a removed package left its conffiles behind (dpkg: config-files)."""
    status = command(["dpkg-query", "-W", "-f", "${Status}", "--", name], check=False).stdout
    return status.endswith(" config-files")


def _apt_get(verb: str, names: list[str]) -> None:
    if dry_run():
        return
    _finish_interrupted_dpkg()
    holder = _lock_holder()
    if holder is not None:
        report("apt", f"waiting for {holder} to release dpkg's lock (at most {LOCK_TIMEOUT}s)")
    try:
        command([*APT_GET, verb, "--", *names], env=APT_ENV)
    except CommandError as error:
        raise fail("apt", f"{verb} {' '.join(names)}", error) from error


def _finish_interrupted_dpkg() -> None:
    """Run `dpkg --configure -a` when a dpkg run was interrupted half-way.

    dpkg journals what it has not yet written to its status file in
    updates/; files there mean it stopped before finishing, and apt refuses
    to run until `dpkg --configure -a` has.
    """
    updates = DPKG / "updates"
    if not updates.is_dir() or not any(p.name.isdigit() for p in updates.iterdir()):
        return
    report("apt", "finishing an interrupted dpkg run (dpkg --configure -a)")
    deadline = time.monotonic() + LOCK_TIMEOUT
    said = False
    while True:
        result = command(
            ["dpkg", "--force-confdef", "--force-confold", "--configure", "-a"],
            env=APT_ENV,
            check=False,
        )
        if result.returncode == 0:
            return
        holder = _lock_holder()
        if holder is None or time.monotonic() > deadline:
            raise fail("apt", "finish the interrupted dpkg run", result.stderr.strip())
        if not said:
            report("apt", f"waiting for {holder} to release dpkg's lock")
            said = True
        time.sleep(1)


def _lock_holder() -> str | None:
    """Who holds dpkg's frontend lock, from /proc/locks: `apt-get (pid 12)`."""
    try:
        inode = LOCK.stat().st_ino
        locks = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in locks.splitlines():
        fields = line.split()
        # 1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF
        if len(fields) >= 6 and fields[5].rsplit(":", 1)[-1] == str(inode):
            pid = fields[4]
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                name = "a process"
            return f"{name} (pid {pid})"
    return None


def _report_with_held(done: str, held: list[str], not_doing: str, did: bool) -> None:
    parts = [done] if done else []
    if held:
        parts.append(f"{' '.join(held)} held, not {not_doing}")
    (changed if did else report)("apt", "; ".join(parts))


def _lists_age() -> float | None:
    """Seconds since the lists were last refreshed, None when there are none."""
    lists = list(LISTS.glob("*_Packages*"))
    if not lists:
        return None
    stamps = [p.stat().st_mtime for p in lists]
    if UPDATE_STAMP.exists():
        stamps.append(UPDATE_STAMP.stat().st_mtime)
    return max(0.0, time.time() - max(stamps))
