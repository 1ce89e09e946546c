"""systemd: enablement with the real systemctl (it works offline in the root);
starting and stopping against a stand-in systemctl, as no systemd runs there."""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
import unittest
import unittest.mock
from pathlib import Path

from pydebianadmin import Error, systemd

from .support import SystemTestCase, call, dry_run

UNIT = Path("/etc/systemd/system/pydebianadmin-test.service")
WANTS = Path("/etc/systemd/system/multi-user.target.wants/pydebianadmin-test.service")


class EnableTest(SystemTestCase):
    def setUp(self) -> None:
        super().setUp()
        UNIT.write_text("[Service]\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n")
        self.addCleanup(UNIT.unlink)
        self.addCleanup(WANTS.unlink, missing_ok=True)

    def test_enables_then_leaves_it_then_disables(self) -> None:
        changed, output = call(systemd.unit, "pydebianadmin-test.service", enabled=True)
        self.assertTrue(changed)
        self.assertEqual(output, "systemd: pydebianadmin-test.service enabled\n")
        self.assertTrue(WANTS.is_symlink())
        changed, output = call(systemd.unit, "pydebianadmin-test.service", enabled=True)
        self.assertFalse(changed)
        self.assertEqual(output, "systemd: pydebianadmin-test.service unchanged\n")
        self.assertEqual(call(systemd.unit, "pydebianadmin-test.service", enabled=False)[1], "systemd: pydebianadmin-test.service disabled\n")
        self.assertFalse(WANTS.is_symlink())

    def test_dry_run(self) -> None:
        with dry_run():
            changed, output = call(systemd.unit, "pydebianadmin-test.service", enabled=True)
        self.assertTrue(changed)
        self.assertEqual(output, "systemd: pydebianadmin-test.service would be enabled\n")
        self.assertFalse(WANTS.is_symlink())

    def test_unknown_unit(self) -> None:
        with self.assertRaisesRegex(Error, "^systemd: cannot enable nosuch.service: .*nosuch.service does not exist"):
            call(systemd.unit, "nosuch.service", enabled=True)

    def test_starting_needs_a_running_systemd(self) -> None:
        with self.assertRaisesRegex(Error, "^systemd: cannot read the state of pydebianadmin-test.service: System has not been booted with systemd"):
            call(systemd.unit, "pydebianadmin-test.service", running=True)


FAKE_SYSTEMCTL = """\
#!/usr/bin/python3
# Stand-in systemctl: keeps one unit's state in $FAKE_SYSTEMCTL_STATE.
import json, os, sys
path = os.environ["FAKE_SYSTEMCTL_STATE"]
with open(path) as f:
    state = json.load(f)
verb = sys.argv[1]
state["calls"].append(" ".join(a for a in sys.argv[1:] if a != "--"))
status = 0
if verb == "is-active":
    print("active" if state["active"] else "inactive")
    status = 0 if state["active"] else 3
elif verb == "show":
    print("NeedDaemonReload=" + ("yes" if state["need_reload"] else "no"))
elif verb in ("start", "restart"):
    state["active"] = True
elif verb == "stop":
    state["active"] = False
elif verb == "daemon-reload":
    state["need_reload"] = False
with open(path, "w") as f:
    json.dump(state, f)
sys.exit(status)
"""


class ActivityTest(unittest.TestCase):
    def setUp(self) -> None:
        temp = tempfile.TemporaryDirectory()
        self.addCleanup(temp.cleanup)
        fake = Path(temp.name, "systemctl")
        fake.write_text(FAKE_SYSTEMCTL)
        fake.chmod(0o755)
        self.state = Path(temp.name, "state.json")
        self.set_state(active=False, need_reload=False)
        environ = {"PATH": f"{temp.name}:{os.environ['PATH']}", "FAKE_SYSTEMCTL_STATE": str(self.state)}
        patcher = unittest.mock.patch.dict(os.environ, environ)
        patcher.start()
        self.addCleanup(patcher.stop)

    def set_state(self, active: bool, need_reload: bool) -> None:
        self.state.write_text(json.dumps({"active": active, "need_reload": need_reload, "calls": []}))

    def changing_calls(self) -> list[str]:
        calls = json.loads(self.state.read_text())["calls"]
        return [c for c in calls if not c.startswith(("is-active", "show"))]

    def test_starts_then_leaves_it(self) -> None:
        changed, output = call(systemd.unit, "app", running=True, restart=True)
        self.assertTrue(changed)
        self.assertEqual(output, "systemd: app started\n")
        self.assertEqual(self.changing_calls(), ["start app"], "not restarted right after starting")
        changed, output = call(systemd.unit, "app", running=True)
        self.assertFalse(changed)
        self.assertEqual(output, "systemd: app unchanged\n")

    def test_restarts_only_when_asked(self) -> None:
        self.set_state(active=True, need_reload=False)
        self.assertFalse(call(systemd.unit, "app", running=True, restart=False)[0])
        self.assertEqual(call(systemd.unit, "app", running=True, restart=True)[1], "systemd: app restarted\n")
        self.assertEqual(self.changing_calls(), ["restart app"])

    def test_restart_does_not_start_a_stopped_unit(self) -> None:
        self.assertFalse(call(systemd.unit, "app", restart=True)[0])

    def test_stops(self) -> None:
        self.set_state(active=True, need_reload=False)
        self.assertEqual(call(systemd.unit, "app", running=False, restart=True)[1], "systemd: app stopped\n")
        self.assertEqual(self.changing_calls(), ["stop app"])

    def test_reloads_a_changed_unit_file_first(self) -> None:
        self.set_state(active=True, need_reload=True)
        self.assertEqual(call(systemd.unit, "app", restart=True)[1], "systemd: app reloaded from disk, restarted\n")
        self.assertEqual(self.changing_calls(), ["daemon-reload", "restart app"])

    def test_dry_run(self) -> None:
        with dry_run():
            changed, output = call(systemd.unit, "app", running=True)
        self.assertTrue(changed)
        self.assertEqual(output, "systemd: app would be started\n")
        self.assertEqual(self.changing_calls(), [])
