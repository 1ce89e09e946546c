"""build_wheel.py: a valid wheel that pip installs offline into a fresh venv."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tempfile
import unittest
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
WHEEL_NAME = "PyDebianAdmin-0.1.0-py3-none-any.whl"


def build(output: Path) -> Path:
    printed = subprocess.run(
        [sys.executable, str(HERE / "build_wheel.py"), str(output)], capture_output=True, text=True, check=True
    ).stdout
    return Path(printed.strip())


class WheelTest(unittest.TestCase):
    def setUp(self) -> None:
        temp = tempfile.TemporaryDirectory()
        self.addCleanup(temp.cleanup)
        self.dir = Path(temp.name)

    def test_record_matches_contents(self) -> None:
        wheel = build(self.dir / "dist")
        self.assertEqual(wheel.name, WHEEL_NAME)
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            self.assertIn("pydebianadmin/py.typed", names)
            self.assertIn("pydebianadmin/apt.py", names)
            record = archive.read("PyDebianAdmin-0.1.0.dist-info/RECORD").decode()
            rows = [row.split(",") for row in record.splitlines()]
            self.assertEqual(sorted(path for path, _, _ in rows), sorted(names))
            for path, digest, size in rows:
                if path.endswith("RECORD"):
                    continue
                data = archive.read(path)
                expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                self.assertEqual((digest, int(size)), (f"sha256={expected}", len(data)), path)
            self.assertIn("Name: PyDebianAdmin", archive.read("PyDebianAdmin-0.1.0.dist-info/METADATA").decode())

    def test_reproducible(self) -> None:
        first = build(self.dir / "a").read_bytes()
        second = build(self.dir / "b").read_bytes()
        self.assertEqual(first, second)

    def test_installs_offline_into_a_venv(self) -> None:
        dist = build(self.dir / "dist").parent
        venv = self.dir / "venv"
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [str(venv / "bin/python"), "-m", "pip", "install", "--no-index", "--disable-pip-version-check",
             "--find-links", str(dist), "PyDebianAdmin"],
            check=True, capture_output=True,
        )
        # Run outside HERE so the source tree cannot be what gets imported.
        imported = subprocess.run(
            [str(venv / "bin/python"), "-c", "from pydebianadmin import apt; print(apt.__file__)"],
            cwd=self.dir, check=True, capture_output=True, text=True,
        ).stdout
        self.assertTrue(imported.startswith(str(venv)), imported)
