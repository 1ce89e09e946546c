"""Idempotent helpers to administer a Debian system, standard library only.

Each helper (apt.install, files.file, users.user, systemd.unit, ...) reads the
current state, changes only what differs, prints one line saying what it did
and returns True when it changed something. With PYDEBIANADMIN_DRY_RUN=1 in
the environment they report what they would do and change nothing.
Failures raise pydebianadmin.Error naming the thing and the cause.
"""

from . import apt, debconf, files, systemd, users
from ._core import CommandError, Error, dry_run, run

__all__ = ["CommandError", "Error", "apt", "debconf", "dry_run", "files", "run", "systemd", "users"]
