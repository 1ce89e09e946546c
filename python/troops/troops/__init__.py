"""The deployment API of Troops: hostnames, roles and deployables.

A deployment is a plain Python file, ``deploy.py``.  It may define roles and
deployables; deployables run after the whole file has been read, in definition
order, each only where one of its roles is active, so a role defined anywhere in
the file counts.  ``troops deploy`` runs the file through ``python -m troops``;
run directly (``python3 deploy.py``) the deployables run when the interpreter
exits, unless the file raised an exception.

A node has a role when deploy.py activates it (``activate_role``), when
``define_role`` lists the node's hostname, or when the node configuration
(``roles`` in ``$TROOPS_ROOT/etc/troops/troops.toml``) names it; ``troops
deploy`` passes those, already checked, as ``TROOPS_NODE_ROLES``.
"""

from __future__ import annotations

import atexit
import os
import sys

# Every deploy starts a fresh interpreter, so imports are paid each time:
# typing, dataclasses, socket and tomllib are left out or loaded only when
# needed (see bench/deploy-overhead).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Iterable, Optional, TypeVar

    F = TypeVar("F", bound=Callable[[], object])

__all__ = [
    "activate_role",
    "define_role",
    "deployable",
    "have_role",
    "hostname",
    "hosts",
    "roles",
]

class _Deployable:
    def __init__(self, func: Callable[[], object], roles: Optional[frozenset[str]]) -> None:
        self.func = func
        self.roles = roles


class _State:
    def __init__(self) -> None:
        self.activated: set[str] = set()
        self.defined: dict[str, set[str]] = {}
        self.deployables: list[_Deployable] = []
        # Set by ``python -m troops``, which runs the deployables itself.
        self.managed = False
        self.failed = False
        self.hostname: Optional[str] = None


_state = _State()


def hostname() -> str:
    """The node's fully qualified name; ``TROOPS_HOSTNAME`` overrides it."""
    override = os.environ.get("TROOPS_HOSTNAME")
    if override:
        return _normalise(override)
    if _state.hostname is None:
        _state.hostname = _normalise(_fqdn(os.uname().nodename))
    return _state.hostname


def _fqdn(name: str) -> str:
    # Like socket.getfqdn(), but asks for the canonical name only, and only when
    # the kernel's hostname is not qualified already.
    if "." in name:
        return name
    import socket

    try:
        infos = socket.getaddrinfo(name, None, flags=socket.AI_CANONNAME)
    except OSError:
        return name
    for info in infos:
        canonical = info[3]
        if canonical and "." in canonical:
            return canonical
    return name


def _normalise(name: str) -> str:
    return name.strip().rstrip(".").lower()


def activate_role(name: str) -> None:
    """Gives this node the role ``name``."""
    _check_role_name(name)
    _state.activated.add(name)


def define_role(name: str, hosts: Iterable[str] = ()) -> None:
    """Lists hosts that have the role ``name``; a node listed here has it."""
    _check_role_name(name)
    if isinstance(hosts, str):
        raise TypeError("define_role: hosts must be a list of names, not a string")
    _state.defined.setdefault(name, set()).update(_normalise(h) for h in hosts)


def have_role(name: str) -> bool:
    """Whether this node has the role ``name`` (as of this point in deploy.py)."""
    return name in roles()


def roles() -> list[str]:
    """The roles this node has, sorted."""
    me = hostname()
    mine = set(_state.activated) | set(_node_roles())
    mine.update(role for role, members in _state.defined.items() if me in members)
    return sorted(mine)


def hosts(role: str) -> list[str]:
    """The hosts ``define_role`` listed for ``role``, sorted."""
    return sorted(_state.defined.get(role, ()))


def deployable(
    func: Optional[F] = None, *, roles: Optional[Iterable[str]] = None
) -> Callable[[F], F] | F:
    """Marks a function to run once deploy.py has been read.

    ``roles=None`` runs it on every node; otherwise only on nodes that have one
    of the roles.  Use as ``@deployable()``, ``@deployable`` or
    ``@deployable(roles=['web'])``.
    """
    wanted = None if roles is None else frozenset(_role_list(roles))

    def register(f: F) -> F:
        _state.deployables.append(_Deployable(f, wanted))
        return f

    return register(func) if func is not None else register


def _role_list(names: Iterable[str]) -> list[str]:
    if isinstance(names, str):
        raise TypeError("deployable: roles must be a list of names, not a string")
    return list(names)


def _check_role_name(name: str) -> None:
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"invalid role name {name!r}")


def _node_roles() -> list[str]:
    # `troops deploy` has read and checked troops.toml already and passes the
    # roles on (names have no whitespace), which spares tomllib's import.
    passed = os.environ.get("TROOPS_NODE_ROLES")
    if passed is not None:
        return passed.split()
    root = os.environ.get("TROOPS_ROOT", "/")
    path = os.path.join(root, "etc/troops/troops.toml")
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return []
    import tomllib

    with f:
        config = tomllib.load(f)
    names = config.get("roles", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: roles must be a list of strings")
    return names


def _run_deployables() -> None:
    """Runs each deployable whose roles this node has, in definition order."""
    mine = set(roles())
    for item in _state.deployables:
        name = getattr(item.func, "__qualname__", repr(item.func))
        if item.roles is not None and not (item.roles & mine):
            needed = ", ".join(sorted(item.roles)) or "(none)"
            print(f"troops: skipping {name} (needs a role of: {needed})", flush=True)
            continue
        print(f"troops: running {name}", flush=True)
        item.func()


def _report(path: str) -> None:
    """Writes what ``troops roles`` and ``troops hosts`` need, as JSON."""
    import json

    report = {
        "roles": roles(),
        "hosts": {role: hosts(role) for role in sorted(_state.defined)},
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f)


def _note_failure(kind, value, tb) -> None:  # type: ignore[no-untyped-def]
    _state.failed = True
    _previous_excepthook(kind, value, tb)


def _at_exit() -> None:
    # Run directly as ``python3 deploy.py``: the file has been read whole unless
    # it raised, so now is when the deployables run.
    if _state.managed or _state.failed:
        return
    try:
        _run_deployables()
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


_previous_excepthook = sys.excepthook
sys.excepthook = _note_failure
atexit.register(_at_exit)
