"""Preseed answers to debconf questions, as debconf-set-selections does.

Only the value is compared: setting it also marks the question as seen, so
packages configured afterwards do not ask it again.
"""

from __future__ import annotations

from ._core import CommandError, Error, changed, command, dry_run, fail, report

# debconf-devel(7), "Templates"; debconf-set-selections skips other types
# with a mere warning, so we check them ourselves.
TYPES = frozenset(
    {"string", "password", "boolean", "select", "multiselect", "note", "text", "error", "title"}
)


def set(package: str, question: str, type: str, value: str | bool) -> bool:
    """Give the debconf question this value (a bool for type boolean is fine).

    A password's value is never printed.
    """
    text = ("true" if value else "false") if isinstance(value, bool) else value
    if type not in TYPES:
        raise Error(f"debconf: cannot set {question}: unknown type {type!r} (one of {', '.join(sorted(TYPES))})")
    if "\n" in text:
        raise Error(f"debconf: cannot set {question}: the value has a newline")
    shown = "(hidden)" if type == "password" else text
    if _get(package, question) == text:
        report("debconf", f"{question} already {shown}")
        return False
    if dry_run():
        changed("debconf", f"would set {question} to {shown}")
        return True
    try:
        command(["debconf-set-selections"], input=f"{package} {question} {type} {text}\n")
    except CommandError as error:
        raise fail("debconf", f"set {question}", error) from error
    changed("debconf", f"set {question} to {shown}")
    return True


def _get(package: str, question: str) -> str | None:
    """The question's current value, None when debconf does not know it."""
    # debconf-communicate answers `0 VALUE`, or `10 ... doesn't exist`.
    try:
        answer = command(["debconf-communicate", "--", package], input=f"GET {question}\n", check=False)
    except CommandError as error:
        raise fail("debconf", f"read {question}", error) from error
    code, _, value = answer.stdout.rstrip("\n").partition(" ")
    return value if code == "0" else None
