"""Files with content, mode and owner; lines in files; directories; symlinks.

New content never appears half-written: it goes to a temporary file in the
same directory, is flushed to disk and then renamed over the old file. Mode,
owner and group that the caller leaves out are kept as they are (a new file
gets 0644 and the caller's user and group).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat

from ._core import Error, changed, dry_run, fail, report

# difflib and string load only when a diff or a template needs them: a deploy
# is a fresh interpreter, and most runs change nothing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

StrPath = str | os.PathLike[str]

NEW_FILE_MODE = 0o644
DIFF_MAX_LINES = 40


def file(
    path: StrPath,
    content: str | bytes | None = None,
    mode: int | None = None,
    owner: str | None = None,
    group: str | None = None,
    secret: bool = False,
) -> bool:
    """Make path a regular file with this content (str is UTF-8), mode, owner, group.

    content=None leaves the content alone (an empty file is created if
    missing). A content change is followed by a short unified diff unless
    secret=True. Whatever else is at path (a symlink, say) is replaced; a
    directory there is an error.
    """
    path = os.fspath(path)
    data = content.encode() if isinstance(content, str) else content
    old_stat = _lstat(path)
    if old_stat is not None and stat.S_ISDIR(old_stat.st_mode):
        raise Error(f"files: cannot write {path}: it is a directory")
    regular = old_stat is not None and stat.S_ISREG(old_stat.st_mode)
    old = _read(path) if regular else None
    new = data if data is not None else (old or b"")
    current = old_stat if regular else None
    changes = _attribute_changes(path, current, mode, owner, group)
    if current is not None and new != old:
        changes.insert(0, "content")
    if current is not None and not changes:
        report("files", f"{path} unchanged")
        return False
    if not dry_run():
        if current is None or new != old:
            _write(path, new, current, mode, owner, group)
        else:
            _set_attributes(path, mode, owner, group)
    _report_changes(path, created=current is None, changes=changes)
    if not secret and new != old:
        _print_diff(path, old, new)
    return True


def template(
    path: StrPath,
    template: StrPath,
    context: Mapping[str, object],
    mode: int | None = None,
    owner: str | None = None,
    group: str | None = None,
    secret: bool = False,
) -> bool:
    """Render the template file with string.Template ($name, ${name}, $$ for $) into path.

    A placeholder missing from context is an error. Otherwise as file().
    """
    import string

    source = os.fspath(template)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
        rendered = string.Template(text).substitute(context)
    except OSError as error:
        raise fail("files", f"read template {source}", error) from error
    except KeyError as error:
        raise fail("files", f"render {source} into {os.fspath(path)}", f"no value for ${error.args[0]}") from error
    except ValueError as error:
        raise fail("files", f"render {source} into {os.fspath(path)}", error) from error
    return file(path, rendered, mode=mode, owner=owner, group=group, secret=secret)


def line(path: StrPath, line: str, present: bool = True, secret: bool = False) -> bool:
    """Make the exact line present in the file (appended if missing) or absent (every copy removed).

    A missing file is created when the line should be present. The line is
    shown in the output unless secret=True.
    """
    path = os.fspath(path)
    if not line or "\n" in line:
        raise Error(f"files: cannot edit {path}: a line must be non-empty and have no newline")
    current = _lstat(path)
    if current is not None and not stat.S_ISREG(current.st_mode):
        raise Error(f"files: cannot edit {path}: not a regular file")
    old = _read(path).decode(errors="surrogateescape") if current is not None else ""
    lines = old.split("\n")
    if (line in lines) == present:
        report("files", f"{path} line already {'present' if present else 'absent'}")
        return False
    if present:
        new = old + ("\n" if old and not old.endswith("\n") else "") + line + "\n"
    else:
        new = "\n".join(kept for kept in lines if kept != line)
    if not dry_run():
        _write(path, new.encode(errors="surrogateescape"), current, None, None, None)
    shown = "" if secret else f": {line}"
    action = ("would be " if dry_run() else "") + ("added" if present else "removed")
    changed("files", f"{path} line {action}{shown}")
    return True


def directory(
    path: StrPath, mode: int | None = None, owner: str | None = None, group: str | None = None
) -> bool:
    """Make path a directory (with missing parents) with this mode, owner and group.

    A symlink to a directory counts as the directory.
    """
    path = os.fspath(path)
    try:
        current: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        current = None
    except OSError as error:
        raise fail("files", f"inspect {path}", error) from error
    if current is not None and not stat.S_ISDIR(current.st_mode):
        raise Error(f"files: cannot make directory {path}: something else is there")
    changes = _attribute_changes(path, current, mode, owner, group)
    if current is not None and not changes:
        report("files", f"{path} unchanged")
        return False
    if not dry_run():
        if current is None:
            try:
                os.makedirs(path)
            except OSError as error:
                raise fail("files", f"create directory {path}", error) from error
        _set_attributes(path, mode, owner, group)
    _report_changes(path, created=current is None, changes=changes)
    return True


def symlink(path: StrPath, target: str) -> bool:
    """Make path a symlink pointing to target, replacing anything but a directory."""
    path = os.fspath(path)
    current = _lstat(path)
    is_link = current is not None and stat.S_ISLNK(current.st_mode)
    if is_link and os.readlink(path) == target:
        report("files", f"{path} -> {target} unchanged")
        return False
    if current is not None and stat.S_ISDIR(current.st_mode):
        raise Error(f"files: cannot make symlink {path}: a directory is there")
    was = "" if current is None else f" (was {'-> ' + os.readlink(path) if is_link else 'a file'})"
    if not dry_run():
        _replace_with_symlink(path, target)
    action = ("would be " if dry_run() else "") + ("created" if current is None else "changed")
    changed("files", f"{path} -> {target} {action}{was}")
    return True


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise fail("files", f"inspect {path}", error) from error


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise fail("files", f"read {path}", error) from error


def _attribute_changes(
    path: str, current: os.stat_result | None, mode: int | None, owner: str | None, group: str | None
) -> list[str]:
    """Describe how mode, owner and group differ, as "mode 0600" and the like.

    Nothing is described for a path that does not exist yet: creating it
    covers them. In a dry run an owner or group that does not exist yet
    (an earlier helper would have created it) counts as a change.
    """
    if current is None:
        # Creating the path sets them; still fail early on unknown names.
        _uid(path, owner)
        _gid(path, group)
        return []
    changes = []
    if mode is not None and stat.S_IMODE(current.st_mode) != mode:
        changes.append(f"mode {mode:04o}")
    if owner is not None and _uid(path, owner) != current.st_uid:
        changes.append(f"owner {owner}")
    if group is not None and _gid(path, group) != current.st_gid:
        changes.append(f"group {group}")
    return changes


def _uid(path: str, owner: str | None) -> int | None:
    if owner is None:
        return None
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        if dry_run():
            return None
        raise Error(f"files: cannot set owner of {path}: no user named {owner}") from None


def _gid(path: str, group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if dry_run():
            return None
        raise Error(f"files: cannot set group of {path}: no group named {group}") from None


def _report_changes(path: str, created: bool, changes: list[str]) -> None:
    """One line: `PATH created` or `PATH content changed, mode changed to 0600`."""
    verb = "would change" if dry_run() else "changed"
    if created:
        changed("files", f"{path} {'would be created' if dry_run() else 'created'}")
        return
    described = []
    for change in changes:
        subject, _, value = change.partition(" ")
        described.append(f"{subject} {verb}" + (f" to {value}" if value else ""))
    changed("files", f"{path} {', '.join(described)}")


def _print_diff(path: str, old: bytes | None, new: bytes) -> None:
    """Print a unified diff of text content, cut to DIFF_MAX_LINES lines."""
    try:
        old_lines = (old or b"").decode().splitlines()
        new_lines = new.decode().splitlines()
    except UnicodeDecodeError:
        print("  (binary content, no diff)", flush=True)
        return
    import difflib

    fromfile = path if old is not None else "/dev/null"
    diff = list(difflib.unified_diff(old_lines, new_lines, fromfile, path, lineterm=""))
    for diff_line in diff[:DIFF_MAX_LINES]:
        print(diff_line)
    if len(diff) > DIFF_MAX_LINES:
        print(f"  ... {len(diff) - DIFF_MAX_LINES} more diff lines")
    print(end="", flush=True)


def _write(
    path: str,
    data: bytes,
    current: os.stat_result | None,
    mode: int | None,
    owner: str | None,
    group: str | None,
) -> None:
    """Atomically replace path with data: temp file in the same directory, fsync, rename."""
    final_mode = mode if mode is not None else stat.S_IMODE(current.st_mode) if current else NEW_FILE_MODE
    uid = _uid(path, owner)
    gid = _gid(path, group)
    uid = uid if uid is not None else current.st_uid if current else -1
    gid = gid if gid is not None else current.st_gid if current else -1
    directory, temp = _temporary_beside(path)
    try:
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchown(descriptor, uid, gid)
            os.fchmod(descriptor, final_mode)  # after fchown, which clears set-id bits
            os.fsync(descriptor)
        os.rename(temp, path)
        _fsync_directory(directory)
    except OSError as error:
        _remove_quietly(temp)
        raise fail("files", f"write {path}", error) from error


def _set_attributes(path: str, mode: int | None, owner: str | None, group: str | None) -> None:
    uid, gid = _uid(path, owner), _gid(path, group)
    try:
        if uid is not None or gid is not None:
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        if mode is not None:
            os.chmod(path, mode)  # after chown, which clears set-id bits
    except OSError as error:
        raise fail("files", f"set mode or owner of {path}", error) from error


def _replace_with_symlink(path: str, target: str) -> None:
    """Create the link under a temporary name and rename it over path (atomic)."""
    directory, temp = _temporary_beside(path)
    try:
        os.symlink(target, temp)
        os.rename(temp, path)
        _fsync_directory(directory)
    except OSError as error:
        _remove_quietly(temp)
        raise fail("files", f"make symlink {path}", error) from error


def _temporary_beside(path: str) -> tuple[str, str]:
    """The directory of path and an unused-looking name in it (random suffix)."""
    directory, name = os.path.split(os.path.abspath(path))
    return directory, os.path.join(directory, f".{name}.{os.urandom(4).hex()}.tmp")


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (rename(2) alone may be lost on a crash)."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
