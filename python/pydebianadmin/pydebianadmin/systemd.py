"""Enable, disable, start, stop and restart systemd units through systemctl.

Enabling works offline (in a chroot or image build); starting, stopping and
restarting need a running systemd and fail clearly without one.
"""

from __future__ import annotations

from ._core import CommandError, Error, changed, command, dry_run, fail, report

# `systemctl is-enabled` states in which enabling would do nothing: the unit
# is enabled already or has no [Install] section to act on (systemctl(1)).
ENABLED_STATES = frozenset({"enabled", "enabled-runtime", "static", "indirect", "generated", "alias", "transient"})
PAST = {
    "daemon-reload": "reloaded from disk",
    "enable": "enabled",
    "disable": "disabled",
    "start": "started",
    "stop": "stopped",
    "restart": "restarted",
}


def unit(name: str, enabled: bool | None = None, running: bool | None = None, restart: bool = False) -> bool:
    """Bring the unit to the wanted state; None leaves that aspect alone.

    restart=True restarts a running unit (one just started is not restarted
    again): pass whether something it depends on changed, e.g.
    `restart=files.file(...)`. Not idempotent on its own: each call with
    restart=True restarts a running unit again. A unit file changed on disk is
    reloaded (daemon-reload) first.
    """
    actions: list[list[str]] = []
    if enabled is not None:
        actions += _enablement(name, enabled)
    if running is not None or restart:
        actions += _activity(name, running, restart)
    if not actions:
        report("systemd", f"{name} unchanged")
        return False
    done = ", ".join(PAST[action[0]] for action in actions)
    if dry_run():
        changed("systemd", f"{name} would be {done}")
        return True
    for action in actions:
        try:
            command(["systemctl", *action])
        except CommandError as error:
            raise fail("systemd", f"{action[0]} {name}", error) from error
    changed("systemd", f"{name} {done}")
    return True


def _enablement(name: str, enabled: bool) -> list[list[str]]:
    state = command(["systemctl", "is-enabled", "--", name], check=False).stdout.strip()
    if enabled and state not in ENABLED_STATES:
        return [["enable", "--", name]]
    if not enabled and state in {"enabled", "enabled-runtime"}:
        return [["disable", "--", name]]
    return []


def _activity(name: str, running: bool | None, restart: bool) -> list[list[str]]:
    actions: list[list[str]] = []
    if _needs_daemon_reload(name):
        actions.append(["daemon-reload"])
    active = _is_active(name)
    if running and not active:
        actions.append(["start", "--", name])
    elif running is False and active:
        actions.append(["stop", "--", name])
    elif restart and active:
        actions.append(["restart", "--", name])
    return actions


def _is_active(name: str) -> bool:
    """Whether the unit runs (or is on its way: activating, reloading)."""
    checked = command(["systemctl", "is-active", "--", name], check=False)
    state = checked.stdout.strip()
    if not state:
        # Without a running systemd there is no state, only an error.
        raise Error(f"systemd: cannot read the state of {name}: {checked.stderr.strip()}")
    return state in {"active", "activating", "reloading"}


def _needs_daemon_reload(name: str) -> bool:
    shown = command(["systemctl", "show", "--property=NeedDaemonReload", "--", name], check=False)
    return shown.stdout.strip() == "NeedDaemonReload=yes"
