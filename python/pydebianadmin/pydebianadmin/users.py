"""Local groups and users, through groupadd, useradd and usermod.

Existing accounts are adjusted, never recreated: a user's home, shell and
supplementary groups are changed in place; its uid, gid and system-ness stay.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Iterable

from ._core import CommandError, changed, command, dry_run, fail, report


def group(name: str, system: bool = False) -> bool:
    """Make sure the group exists (created as a system group if system=True)."""
    if _group_exists(name):
        report("users", f"group {name} already exists")
        return False
    if dry_run():
        changed("users", f"would create group {name}")
        return True
    _command("create group", name, ["groupadd", *(["--system"] if system else []), "--", name])
    changed("users", f"created group {name}")
    return True


def user(
    name: str,
    groups: Iterable[str] = (),
    system: bool = False,
    home: str | None = None,
    shell: str | None = None,
) -> bool:
    """Make sure the user exists, is in at least these groups, with this home and shell.

    Groups not listed are left as they are. A new user gets a group of its
    own name; its home directory is created unless it is a system user without
    an explicit home. Changing the home of an existing user does not move its
    files.
    """
    groups = list(groups)
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        return _create_user(name, groups, system, home, shell)
    options: list[str] = []
    changes: list[str] = []
    if home is not None and account.pw_dir != home:
        options += ["--home", home]
        changes.append(f"home {home}")
    if shell is not None and account.pw_shell != shell:
        options += ["--shell", shell]
        changes.append(f"shell {shell}")
    missing = [g for g in groups if name not in _members(g)]
    if missing:
        options += ["--append", "--groups", ",".join(missing)]
        changes.append(f"added to {', '.join(missing)}")
    if not changes:
        report("users", f"user {name} unchanged")
        return False
    if dry_run():
        changed("users", f"would change user {name}: {'; '.join(changes)}")
        return True
    _command("change user", name, ["usermod", *options, "--", name])
    changed("users", f"changed user {name}: {'; '.join(changes)}")
    return True


def _create_user(
    name: str, groups: list[str], system: bool, home: str | None, shell: str | None
) -> bool:
    if dry_run():
        changed("users", f"would create user {name}")
        return True
    argv = ["useradd", "--user-group"]
    if system:
        argv.append("--system")
    # Debian's useradd creates no home by default, unlike adduser.
    if home is not None or not system:
        argv.append("--create-home")
    if home is not None:
        argv += ["--home-dir", home]
    if shell is not None:
        argv += ["--shell", shell]
    if groups:
        argv += ["--groups", ",".join(groups)]
    _command("create user", name, [*argv, "--", name])
    changed("users", f"created user {name}")
    return True


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _members(group_name: str) -> list[str]:
    """Supplementary members of a group; a missing group has none (usermod will say so)."""
    try:
        return list(grp.getgrnam(group_name).gr_mem)
    except KeyError:
        return []


def _command(what: str, name: str, argv: list[str]) -> None:
    try:
        command(argv)
    except CommandError as error:
        raise fail("users", f"{what} {name}", error) from error
