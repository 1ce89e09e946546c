"""What every helper shares: the error type, running commands, dry run, reporting.

Helpers read the system's state, change only what differs, print exactly one
line saying what they did (or would do, in a dry run) and return whether
anything changed.
"""

from __future__ import annotations

import os
import sys

# shlex and subprocess load when a command is run or named: a deploy is a
# fresh interpreter, and many never run a command.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Mapping, Sequence

DRY_RUN_VARIABLE = "PYDEBIANADMIN_DRY_RUN"
DRIFT_FILE_VARIABLE = "PYDEBIANADMIN_DRIFT_FILE"


class Error(Exception):
    """A helper could not bring the system to the requested state."""


class CommandError(Error):
    """A command exited with a non-zero status; carries its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        message = f"command `{_shell_words(self.argv)}` exited with status {returncode}"
        if self.stderr:
            message += f": {self.stderr}"
        super().__init__(message)


def dry_run() -> bool:
    """Whether PYDEBIANADMIN_DRY_RUN asks helpers to report without changing.

    Read at every call, so a caller can switch it on for part of a run.
    """
    return os.environ.get(DRY_RUN_VARIABLE, "") not in ("", "0")


def report(area: str, message: str) -> None:
    """Print a helper's one line; flushed so it interleaves with child output."""
    print(f"{area}: {message}", flush=True)


def changed(area: str, message: str) -> None:
    """Report a change made, or in a dry run one that would be made.

    In a dry run with PYDEBIANADMIN_DRIFT_FILE set (`troops check`), the
    line is also appended to that file: what would change is the drift.
    """
    report(area, message)
    path = os.environ.get(DRIFT_FILE_VARIABLE)
    if path and dry_run():
        with open(path, "a", encoding="utf-8") as drift:
            drift.write(f"{area}: {message}\n")


def command(
    argv: Sequence[str],
    *,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run argv with output captured as text; raise CommandError on failure.

    LC_ALL=C keeps the output we parse and the errors we pass on stable.
    With check=False the caller inspects the exit status itself.
    """
    import subprocess

    full_env = {**os.environ, **(env or {}), "LC_ALL": "C"}
    try:
        completed = subprocess.run(
            list(argv),
            input=input,
            env=full_env,
            capture_output=True,
            text=True,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )
    except OSError as error:
        raise CommandError(argv, 127, error.strerror or str(error)) from error
    if check and completed.returncode != 0:
        raise CommandError(argv, completed.returncode, completed.stderr)
    return completed


def run(*argv: str) -> bool:
    """Run a command, show its output, and return True.

    Not idempotent: the command runs every time (in a dry run it is only
    reported). Raises CommandError naming the command, its exit status and
    its stderr when it fails.
    """
    if not argv:
        raise Error("run: no command given")
    if dry_run():
        changed("run", f"would run {_shell_words(argv)}")
        return True
    completed = command(argv)
    changed("run", f"ran {_shell_words(argv)}")
    sys.stdout.write(completed.stdout)
    sys.stderr.write(completed.stderr)
    return True


def fail(area: str, what: str, cause: BaseException | str) -> Error:
    """Build the library's error: `area: cannot WHAT: CAUSE`.

    For a failed command the cause is its stderr alone: the helper's message
    already says what was being done.
    """
    if isinstance(cause, CommandError):
        cause = cause.stderr or f"`{_shell_words(cause.argv)}` exited with status {cause.returncode}"
    elif isinstance(cause, OSError):
        cause = cause.strerror or str(cause)
    return Error(f"{area}: cannot {what}: {cause}")


def _shell_words(argv: Sequence[str]) -> str:
    """argv as a shell would read it back (shlex.join)."""
    import shlex

    return shlex.join(argv)
