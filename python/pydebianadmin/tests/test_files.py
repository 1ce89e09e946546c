"""files: content, diffs, mode and owner, lines, directories, symlinks."""

from __future__ import annotations

import os
import pwd
import stat
import tempfile
import unittest
from pathlib import Path

from pydebianadmin import Error, files

from .support import SystemTestCase, call, dry_run


class TempDirTestCase(unittest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        temp = tempfile.TemporaryDirectory()
        self.addCleanup(temp.cleanup)
        self.dir = Path(temp.name)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


class FileTest(TempDirTestCase):
    def test_creates_the_file_then_leaves_it(self) -> None:
        path = self.dir / "motd"
        changed, output = call(files.file, path, "hello\n", mode=0o600)
        self.assertTrue(changed)
        self.assertEqual(output.splitlines()[0], f"files: {path} created")
        self.assertEqual(path.read_text(), "hello\n")
        self.assertEqual(mode_of(path), 0o600)

        changed, output = call(files.file, path, "hello\n", mode=0o600)
        self.assertFalse(changed)
        self.assertEqual(output, f"files: {path} unchanged\n")

    def test_content_change_prints_a_diff(self) -> None:
        path = self.dir / "motd"
        path.write_text("one\ntwo\n")
        changed, output = call(files.file, path, "one\nthree\n")
        self.assertTrue(changed)
        self.assertEqual(
            output.splitlines(),
            [f"files: {path} content changed", f"--- {path}", f"+++ {path}", "@@ -1,2 +1,2 @@", " one", "-two", "+three"],
        )
        self.assertEqual(path.read_text(), "one\nthree\n")

    def test_secret_hides_the_diff(self) -> None:
        path = self.dir / "key"
        path.write_text("old-secret\n")
        changed, output = call(files.file, path, "new-secret\n", secret=True)
        self.assertTrue(changed)
        self.assertEqual(output, f"files: {path} content changed\n")

    def test_long_diff_is_cut(self) -> None:
        path = self.dir / "long"
        path.write_text("".join(f"{n}\n" for n in range(100)))
        _, output = call(files.file, path, "")
        self.assertLessEqual(len(output.splitlines()), files.DIFF_MAX_LINES + 2)
        self.assertRegex(output.splitlines()[-1], r"^  \.\.\. \d+ more diff lines$")

    def test_replaces_atomically_keeping_mode(self) -> None:
        path = self.dir / "conf"
        path.write_text("a\n")
        path.chmod(0o640)
        inode = path.stat().st_ino
        call(files.file, path, b"b\n")
        self.assertNotEqual(path.stat().st_ino, inode, "content should be renamed into place")
        self.assertEqual(mode_of(path), 0o640)
        self.assertEqual(os.listdir(self.dir), ["conf"], "no temporary file is left")

    def test_mode_only(self) -> None:
        path = self.dir / "conf"
        path.write_text("a\n")
        path.chmod(0o644)
        changed, output = call(files.file, path, mode=0o600)
        self.assertTrue(changed)
        self.assertEqual(output, f"files: {path} mode changed to 0600\n")
        self.assertEqual(path.read_text(), "a\n")
        self.assertEqual(mode_of(path), 0o600)

    def test_a_dry_run_lists_what_would_change_in_the_drift_file(self) -> None:
        drift = self.dir / "drift"
        same, other = self.dir / "same", self.dir / "other"
        same.write_text("kept\n")
        other.write_text("edited by hand\n")
        os.environ["PYDEBIANADMIN_DRIFT_FILE"] = str(drift)
        self.addCleanup(os.environ.pop, "PYDEBIANADMIN_DRIFT_FILE")
        call(files.file, same, "kept\n")
        with dry_run():
            call(files.file, same, "kept\n")
            call(files.file, other, "managed\n")
        self.assertEqual(drift.read_text(), f"files: {other} content would change\n")
        self.assertEqual(other.read_text(), "edited by hand\n")

    def test_dry_run_changes_nothing(self) -> None:
        path = self.dir / "conf"
        path.write_text("a\n")
        path.chmod(0o644)
        with dry_run():
            changed, output = call(files.file, path, "b\n", mode=0o600)
            created, created_output = call(files.file, self.dir / "new", "x")
        self.assertTrue(changed)
        self.assertEqual(output.splitlines()[0], f"files: {path} content would change, mode would change to 0600")
        self.assertIn("+b", output.splitlines())
        self.assertEqual(path.read_text(), "a\n")
        self.assertEqual(mode_of(path), 0o644)
        self.assertTrue(created)
        self.assertEqual(created_output.splitlines()[0], f"files: {self.dir / 'new'} would be created")
        self.assertFalse((self.dir / "new").exists())

    def test_directory_in_the_way(self) -> None:
        with self.assertRaisesRegex(Error, f"^files: cannot write {self.dir}: it is a directory$"):
            call(files.file, self.dir, "x")

    def test_missing_parent_directory(self) -> None:
        path = self.dir / "missing" / "file"
        with self.assertRaisesRegex(Error, f"^files: cannot write {path}: No such file or directory$"):
            call(files.file, path, "x")


class FileOwnerTest(TempDirTestCase, SystemTestCase):
    def test_owner_and_group_by_name(self) -> None:
        path = self.dir / "owned"
        path.write_text("x")
        changed, output = call(files.file, path, owner="nobody", group="nogroup")
        self.assertTrue(changed)
        self.assertEqual(output, f"files: {path} owner changed to nobody, group changed to nogroup\n")
        self.assertEqual(path.stat().st_uid, pwd.getpwnam("nobody").pw_uid)
        call(files.file, path, "y", owner="nobody", group="nogroup")
        self.assertEqual(path.stat().st_uid, pwd.getpwnam("nobody").pw_uid, "kept by a content change")
        self.assertFalse(call(files.file, path, "y", owner="nobody")[0])

    def test_unknown_owner(self) -> None:
        path = self.dir / "owned"
        with self.assertRaisesRegex(Error, f"^files: cannot set owner of {path}: no user named nosuchuser$"):
            call(files.file, path, "x", owner="nosuchuser")
        with dry_run():
            self.assertTrue(call(files.file, path, "x", owner="nosuchuser")[0])


class TemplateTest(TempDirTestCase):
    def test_renders_then_leaves_it(self) -> None:
        source = self.dir / "greeting.tmpl"
        source.write_text("Hello $name, costs $$${price}\n")
        path = self.dir / "greeting"
        changed, _ = call(files.template, path, source, {"name": "Ada", "price": 3})
        self.assertTrue(changed)
        self.assertEqual(path.read_text(), "Hello Ada, costs $3\n")
        changed, output = call(files.template, path, source, {"name": "Ada", "price": 3})
        self.assertFalse(changed)
        self.assertEqual(output, f"files: {path} unchanged\n")
        with dry_run():
            self.assertTrue(call(files.template, path, source, {"name": "Bob", "price": 3})[0])
        self.assertEqual(path.read_text(), "Hello Ada, costs $3\n")

    def test_missing_value(self) -> None:
        source = self.dir / "greeting.tmpl"
        source.write_text("Hello $name\n")
        path = self.dir / "greeting"
        with self.assertRaisesRegex(Error, f"^files: cannot render {source} into {path}: no value for \\$name$"):
            call(files.template, path, source, {})
        self.assertFalse(path.exists())


class LineTest(TempDirTestCase):
    def test_adds_the_line_once(self) -> None:
        path = self.dir / "hosts"
        path.write_text("127.0.0.1 localhost")  # no final newline
        changed, output = call(files.line, path, "10.0.0.1 db")
        self.assertTrue(changed)
        self.assertEqual(output, f"files: {path} line added: 10.0.0.1 db\n")
        self.assertEqual(path.read_text(), "127.0.0.1 localhost\n10.0.0.1 db\n")
        changed, output = call(files.line, path, "10.0.0.1 db")
        self.assertFalse(changed)
        self.assertEqual(output, f"files: {path} line already present\n")

    def test_removes_every_copy(self) -> None:
        path = self.dir / "hosts"
        path.write_text("a\nb\na\nc\n")
        changed, output = call(files.line, path, "a", present=False, secret=True)
        self.assertTrue(changed)
        self.assertEqual(output, f"files: {path} line removed\n")
        self.assertEqual(path.read_text(), "b\nc\n")
        self.assertFalse(call(files.line, path, "a", present=False)[0])
        self.assertFalse(call(files.line, self.dir / "missing", "a", present=False)[0])

    def test_creates_a_missing_file(self) -> None:
        path = self.dir / "new"
        self.assertTrue(call(files.line, path, "x")[0])
        self.assertEqual(path.read_text(), "x\n")

    def test_dry_run(self) -> None:
        path = self.dir / "hosts"
        path.write_text("a\n")
        with dry_run():
            changed, output = call(files.line, path, "b")
        self.assertTrue(changed)
        self.assertEqual(output, f"files: {path} line would be added: b\n")
        self.assertEqual(path.read_text(), "a\n")

    def test_rejects_a_newline(self) -> None:
        with self.assertRaisesRegex(Error, "^files: cannot edit .*: a line must be non-empty and have no newline$"):
            call(files.line, self.dir / "x", "a\nb")


class DirectoryTest(TempDirTestCase):
    def test_creates_then_leaves_it(self) -> None:
        path = self.dir / "srv" / "app"
        changed, output = call(files.directory, path, mode=0o750)
        self.assertTrue(changed)
        self.assertEqual(output, f"files: {path} created\n")
        self.assertTrue(path.is_dir())
        self.assertEqual(mode_of(path), 0o750)
        changed, output = call(files.directory, path, mode=0o750)
        self.assertFalse(changed)
        self.assertEqual(output, f"files: {path} unchanged\n")
        self.assertEqual(call(files.directory, path, mode=0o700)[1], f"files: {path} mode changed to 0700\n")

    def test_dry_run(self) -> None:
        path = self.dir / "app"
        with dry_run():
            changed, output = call(files.directory, path)
        self.assertTrue(changed)
        self.assertEqual(output, f"files: {path} would be created\n")
        self.assertFalse(path.exists())

    def test_file_in_the_way(self) -> None:
        path = self.dir / "app"
        path.write_text("")
        with self.assertRaisesRegex(Error, f"^files: cannot make directory {path}: something else is there$"):
            call(files.directory, path)


class DirectoryOwnerTest(TempDirTestCase, SystemTestCase):
    def test_owner(self) -> None:
        path = self.dir / "app"
        self.assertTrue(call(files.directory, path, owner="nobody", group="nogroup")[0])
        self.assertEqual(path.stat().st_uid, pwd.getpwnam("nobody").pw_uid)
        self.assertFalse(call(files.directory, path, owner="nobody", group="nogroup")[0])


class SymlinkTest(TempDirTestCase):
    def test_creates_changes_and_leaves_it(self) -> None:
        path = self.dir / "current"
        changed, output = call(files.symlink, path, "releases/1")
        self.assertTrue(changed)
        self.assertEqual(output, f"files: {path} -> releases/1 created\n")
        self.assertEqual(os.readlink(path), "releases/1")
        changed, output = call(files.symlink, path, "releases/1")
        self.assertFalse(changed)
        self.assertEqual(output, f"files: {path} -> releases/1 unchanged\n")
        changed, output = call(files.symlink, path, "releases/2")
        self.assertEqual(output, f"files: {path} -> releases/2 changed (was -> releases/1)\n")
        self.assertEqual(os.readlink(path), "releases/2")

    def test_replaces_a_file(self) -> None:
        path = self.dir / "current"
        path.write_text("")
        self.assertTrue(call(files.symlink, path, "target")[0])
        self.assertTrue(path.is_symlink())

    def test_dry_run(self) -> None:
        path = self.dir / "current"
        with dry_run():
            changed, output = call(files.symlink, path, "target")
        self.assertTrue(changed)
        self.assertEqual(output, f"files: {path} -> target would be created\n")
        self.assertFalse(path.is_symlink())

    def test_directory_in_the_way(self) -> None:
        path = self.dir / "current"
        path.mkdir()
        with self.assertRaisesRegex(Error, f"^files: cannot make symlink {path}: a directory is there$"):
            call(files.symlink, path, "target")
