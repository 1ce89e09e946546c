"""debconf: real debconf-set-selections and debconf-communicate in the disposable root."""

from __future__ import annotations

import subprocess

from pydebianadmin import Error, debconf

from .support import SystemTestCase, call, dry_run


def get(question: str) -> str:
    return subprocess.run(
        ["debconf-communicate"], input=f"GET {question}\n", capture_output=True, text=True, check=True
    ).stdout


class SetTest(SystemTestCase):
    def test_sets_then_leaves_it(self) -> None:
        changed, output = call(debconf.set, "tzdata", "tzdata/Areas", "select", "Asia")
        self.assertTrue(changed)
        self.assertEqual(output, "debconf: set tzdata/Areas to Asia\n")
        self.assertEqual(get("tzdata/Areas"), "0 Asia\n")
        changed, output = call(debconf.set, "tzdata", "tzdata/Areas", "select", "Asia")
        self.assertFalse(changed)
        self.assertEqual(output, "debconf: tzdata/Areas already Asia\n")

    def test_unknown_question_and_boolean(self) -> None:
        self.assertTrue(call(debconf.set, "pydebianadmin-test", "pydebianadmin-test/flag", "boolean", True)[0])
        self.assertEqual(get("pydebianadmin-test/flag"), "0 true\n")
        self.assertFalse(call(debconf.set, "pydebianadmin-test", "pydebianadmin-test/flag", "boolean", True)[0])

    def test_password_is_not_shown(self) -> None:
        _, output = call(debconf.set, "pydebianadmin-test", "pydebianadmin-test/secret", "password", "hunter2")
        self.assertEqual(output, "debconf: set pydebianadmin-test/secret to (hidden)\n")

    def test_dry_run(self) -> None:
        with dry_run():
            changed, output = call(debconf.set, "tzdata", "tzdata/Areas", "select", "Europe")
        self.assertTrue(changed)
        self.assertEqual(output, "debconf: would set tzdata/Areas to Europe\n")
        self.assertNotEqual(get("tzdata/Areas"), "0 Europe\n")

    def test_unknown_type(self) -> None:
        with self.assertRaisesRegex(Error, "^debconf: cannot set tzdata/Areas: unknown type 'choice'"):
            call(debconf.set, "tzdata", "tzdata/Areas", "choice", "Asia")
