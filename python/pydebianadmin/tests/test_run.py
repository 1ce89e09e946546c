"""run: the plain command runner and its error."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import unittest
import unittest.mock
from pathlib import Path

from pydebianadmin import CommandError, Error, run

from .support import call, dry_run


class RunTest(unittest.TestCase):
    def test_runs_and_shows_output(self) -> None:
        changed, output = call(run, "echo", "hi")
        self.assertTrue(changed)
        self.assertEqual(output, "run: ran echo hi\nhi\n")

    def test_failure_names_command_status_and_stderr(self) -> None:
        with self.assertRaises(CommandError) as caught:
            call(run, "sh", "-c", "echo out; echo broken >&2; exit 3")
        self.assertEqual(
            str(caught.exception), "command `sh -c 'echo out; echo broken >&2; exit 3'` exited with status 3: broken"
        )
        self.assertIsInstance(caught.exception, Error)
        self.assertEqual(caught.exception.returncode, 3)

    @unittest.mock.patch.dict(os.environ, {"PATH": "/usr/bin:/bin"})
    def test_missing_program(self) -> None:
        with self.assertRaisesRegex(CommandError, "^command `nosuchprogram` exited with status 127: No such file or directory"):
            call(run, "nosuchprogram")

    def test_dry_run(self) -> None:
        with tempfile.TemporaryDirectory() as temp:
            path = Path(temp, "touched")
            with dry_run():
                changed, output = call(run, "touch", str(path))
            self.assertTrue(changed)
            self.assertEqual(output, f"run: would run touch {path}\n")
            self.assertFalse(path.exists())


class PackageTest(unittest.TestCase):
    def test_submodules_are_attributes_of_the_package(self) -> None:
        # They load on first use, yet `import pydebianadmin` gives them all.
        code = (
            "import pydebianadmin as p, sys\n"
            "loaded = 'pydebianadmin.apt' in sys.modules\n"
            "print(loaded, p.apt.__name__, p.users.user.__module__, 'systemd' in dir(p))\n"
            "p.nosuch\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=Path(__file__).parent.parent
        )
        self.assertEqual(out.stdout, "False pydebianadmin.apt pydebianadmin.users True\n", out.stderr)
        self.assertIn("AttributeError: module 'pydebianadmin' has no attribute 'nosuch'", out.stderr)
