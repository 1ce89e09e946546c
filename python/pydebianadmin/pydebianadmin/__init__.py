"""Idempotent helpers to administer a Debian system, standard library only.

Each helper (apt.install, files.file, users.user, systemd.unit, ...) reads the
current state, changes only what differs, prints one line saying what it did
and returns True when it changed something. With PYDEBIANADMIN_DRY_RUN=1 in
the environment they report what they would do and change nothing.
Failures raise pydebianadmin.Error naming the thing and the cause.
"""

from ._core import CommandError, Error, dry_run, run

__all__ = ["CommandError", "Error", "apt", "debconf", "dry_run", "files", "run", "systemd", "users"]

_SUBMODULES = {"apt", "debconf", "files", "systemd", "users"}


def __getattr__(name: str) -> object:
    # `pydebianadmin.apt` loads apt on first use: each deploy is a fresh
    # interpreter, and one that only manages files should not pay for the rest.
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES)
