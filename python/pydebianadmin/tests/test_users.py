"""users: real groupadd, useradd and usermod in the disposable root."""

from __future__ import annotations

import grp
import os
import pwd

from pydebianadmin import Error, users

from .support import SystemTestCase, call, dry_run


class GroupTest(SystemTestCase):
    def test_creates_then_leaves_it(self) -> None:
        changed, output = call(users.group, "deployers", system=True)
        self.assertTrue(changed)
        self.assertEqual(output, "users: created group deployers\n")
        self.assertLess(grp.getgrnam("deployers").gr_gid, 1000, "a system group")
        changed, output = call(users.group, "deployers")
        self.assertFalse(changed)
        self.assertEqual(output, "users: group deployers already exists\n")

    def test_dry_run(self) -> None:
        with dry_run():
            changed, output = call(users.group, "dryrunners")
        self.assertTrue(changed)
        self.assertEqual(output, "users: would create group dryrunners\n")
        self.assertRaises(KeyError, grp.getgrnam, "dryrunners")

    def test_invalid_name(self) -> None:
        with self.assertRaisesRegex(Error, "^users: cannot create group bad name: groupadd: 'bad name' is not a valid group name$"):
            call(users.group, "bad name")


class UserTest(SystemTestCase):
    def test_creates_then_leaves_it(self) -> None:
        changed, output = call(users.user, "ada", groups=["adm"], shell="/bin/bash")
        self.assertTrue(changed)
        self.assertEqual(output, "users: created user ada\n")
        account = pwd.getpwnam("ada")
        self.assertEqual((account.pw_dir, account.pw_shell), ("/home/ada", "/bin/bash"))
        self.assertTrue(os.path.isdir("/home/ada"))
        self.assertIn("ada", grp.getgrnam("adm").gr_mem)
        changed, output = call(users.user, "ada", groups=["adm"], shell="/bin/bash")
        self.assertFalse(changed)
        self.assertEqual(output, "users: user ada unchanged\n")

    def test_changes_only_what_differs(self) -> None:
        call(users.user, "grace", groups=["adm"])
        changed, output = call(users.user, "grace", groups=["adm", "staff"], shell="/bin/bash")
        self.assertTrue(changed)
        self.assertEqual(output, "users: changed user grace: shell /bin/bash; added to staff\n")
        self.assertEqual(pwd.getpwnam("grace").pw_shell, "/bin/bash")
        self.assertIn("grace", grp.getgrnam("staff").gr_mem)
        self.assertIn("grace", grp.getgrnam("adm").gr_mem, "other groups are kept")

    def test_system_user(self) -> None:
        call(users.user, "svc", system=True, home="/var/lib/svc", shell="/usr/sbin/nologin")
        account = pwd.getpwnam("svc")
        self.assertLess(account.pw_uid, 1000)
        self.assertTrue(os.path.isdir("/var/lib/svc"))

    def test_dry_run(self) -> None:
        with dry_run():
            changed, output = call(users.user, "dryrunner")
            self.assertEqual(call(users.user, "root", shell="/bin/sh")[1], "users: would change user root: shell /bin/sh\n")
        self.assertTrue(changed)
        self.assertEqual(output, "users: would create user dryrunner\n")
        self.assertRaises(KeyError, pwd.getpwnam, "dryrunner")
        self.assertEqual(pwd.getpwnam("root").pw_shell, "/bin/bash")

    def test_unknown_group(self) -> None:
        with self.assertRaisesRegex(Error, "^users: cannot create user linus: useradd: group 'nosuchgroup' does not exist$"):
            call(users.user, "linus", groups=["nosuchgroup"])
        self.assertRaises(KeyError, pwd.getpwnam, "linus")
