"""apt: real dpkg and apt-get in the disposable root (hello and tmux are in its apt cache)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from pydebianadmin import Error, apt

from .support import SystemTestCase, call, dry_run


def installed(package: str) -> bool:
    status = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}", package], capture_output=True, text=True, check=False
    ).stdout
    return status == "install ok installed" or status == "hold ok installed"


def apt_mark(*argv: str) -> None:
    subprocess.run(["apt-mark", *argv], check=True, capture_output=True)


def apt_get(*argv: str) -> None:
    subprocess.run(["apt-get", "-q", "-y", *argv], check=True, capture_output=True)


class InstallTest(SystemTestCase):
    def setUp(self) -> None:
        super().setUp()
        # Cleanups run last to first: a test's unhold comes before this.
        self.addCleanup(apt_get, "purge", "hello", "tmux")

    def test_installs_then_leaves_it(self) -> None:
        changed, output = call(apt.install, "hello")
        self.assertTrue(changed)
        self.assertEqual(output, "apt: installed hello\n")
        self.assertTrue(installed("hello"))
        changed, output = call(apt.install, "hello")
        self.assertFalse(changed)
        self.assertEqual(output, "apt: hello already installed\n")
        self.assertEqual(call(apt.install, "hello", "tmux")[1], "apt: installed tmux\n")

    def test_waits_for_the_dpkg_lock(self) -> None:
        # Another apt (cloud-init's, unattended-upgrades') holds the lock a while.
        holder = subprocess.Popen(
            [
                "python3",
                "-c",
                "import fcntl, time\n"
                "f = open('/var/lib/dpkg/lock-frontend', 'w')\n"
                "fcntl.lockf(f, fcntl.LOCK_EX)\n"
                "print('locked', flush=True)\n"
                "time.sleep(3)\n",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(holder.wait)
        assert holder.stdout is not None
        self.addCleanup(holder.stdout.close)
        self.assertEqual(holder.stdout.readline(), "locked\n")
        started = time.monotonic()
        changed, output = call(apt.install, "hello")
        waited = time.monotonic() - started
        self.assertTrue(changed)
        self.assertTrue(installed("hello"))
        self.assertGreater(waited, 1.5, "did not wait for the lock")
        self.assertIn(f"apt: waiting for python3 (pid {holder.pid}) to release dpkg's lock", output)

    def test_finishes_an_interrupted_dpkg_run_first(self) -> None:
        # dpkg stopped half-way: a package unpacked, not configured, and its
        # journal not yet merged. apt refuses to run until it is finished.
        debs = sorted(Path("/var/cache/apt/archives").glob("hello_*.deb"))
        self.assertTrue(debs, "hello is not in the root's apt cache")
        subprocess.run(["dpkg", "--unpack", str(debs[0])], check=True, capture_output=True)
        Path("/var/lib/dpkg/updates/0001").touch()
        refused = subprocess.run(["apt-get", "-q", "-y", "install", "tmux"], capture_output=True, text=True)
        self.assertIn("dpkg was interrupted", refused.stderr)
        changed, output = call(apt.install, "tmux")
        self.assertTrue(changed)
        self.assertIn("apt: finishing an interrupted dpkg run", output)
        self.assertTrue(installed("hello"))
        self.assertTrue(installed("tmux"))

    def test_dry_run(self) -> None:
        with dry_run():
            changed, output = call(apt.install, "tmux")
        self.assertTrue(changed)
        self.assertEqual(output, "apt: would install tmux\n")
        self.assertFalse(installed("tmux"))

    def test_unknown_package(self) -> None:
        with self.assertRaisesRegex(Error, "^apt: cannot install nosuchpkg: .*E: Unable to locate package nosuchpkg"):
            call(apt.install, "nosuchpkg")

    def test_held_package_is_not_installed(self) -> None:
        apt_mark("hold", "tmux")
        self.addCleanup(apt_mark, "unhold", "tmux")
        changed, output = call(apt.install, "hello", "tmux")
        self.assertEqual(output, "apt: installed hello; tmux held, not installing\n")
        self.assertTrue(changed)
        self.assertFalse(installed("tmux"))


class RemoveTest(SystemTestCase):
    def setUp(self) -> None:
        super().setUp()
        apt_get("install", "hello")
        self.addCleanup(apt_get, "purge", "hello", "tmux")

    def test_removes_then_leaves_it(self) -> None:
        changed, output = call(apt.remove, "hello")
        self.assertTrue(changed)
        self.assertEqual(output, "apt: removed hello\n")
        self.assertFalse(installed("hello"))
        changed, output = call(apt.remove, "hello")
        self.assertFalse(changed)
        self.assertEqual(output, "apt: hello not installed\n")

    def test_dry_run(self) -> None:
        with dry_run():
            changed, output = call(apt.remove, "hello")
        self.assertTrue(changed)
        self.assertEqual(output, "apt: would remove hello\n")
        self.assertTrue(installed("hello"))

    def test_held_package_stays(self) -> None:
        apt_mark("hold", "hello")
        self.addCleanup(apt_mark, "unhold", "hello")
        changed, output = call(apt.remove, "hello")
        self.assertFalse(changed)
        self.assertEqual(output, "apt: hello held, not removing\n")
        self.assertTrue(installed("hello"))

    def test_removing_what_a_held_package_needs_fails(self) -> None:
        apt_get("install", "tmux")
        apt_mark("hold", "tmux")
        self.addCleanup(apt_mark, "unhold", "tmux")
        with self.assertRaisesRegex(Error, "^apt: cannot remove libevent-core-2.1-7: .*held packages"):
            call(apt.remove, "libevent-core-2.1-7")
        self.assertTrue(installed("tmux"))


class UpdateTest(SystemTestCase):
    """Fetches the lists from the Debian mirror in sources.list."""

    extra_source = Path("/etc/apt/sources.list.d/pydebianadmin-test.list")

    def test_updates_when_stale_then_not(self) -> None:
        apt.UPDATE_STAMP.unlink(missing_ok=True)
        for listing in apt.LISTS.glob("*_Packages*"):
            os.utime(listing, (0, 0))
        with dry_run():
            self.assertEqual(call(apt.update)[1], "apt: would update package lists\n")
        self.assertFalse(apt.UPDATE_STAMP.exists())
        changed, output = call(apt.update)
        self.assertTrue(changed)
        self.assertEqual(output, "apt: updated package lists\n")
        changed, output = call(apt.update)
        self.assertFalse(changed)
        self.assertRegex(output, r"^apt: package lists are fresh \(updated \d+s ago\)\n$")

    def test_failure_names_the_cause(self) -> None:
        self.extra_source.write_text("deb [trusted=yes] file:/nonexistent ./\n")
        self.addCleanup(self.extra_source.unlink)
        with self.assertRaisesRegex(Error, "^apt: cannot update package lists: .*file:/nonexistent"):
            call(apt.update, max_age=0)
