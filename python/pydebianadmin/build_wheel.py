#!/usr/bin/python3
"""Build the PyDebianAdmin wheel with the standard library alone, offline.

Usage: build_wheel.py OUTPUT_DIR   (prints the wheel's path)

A wheel is a zip of the package plus a .dist-info directory (METADATA, WHEEL,
RECORD with a sha256 per file), per the binary distribution format spec:
https://packaging.python.org/en/latest/specifications/binary-distribution-format/
Name, version and summary come from pyproject.toml. Entries are sorted and
dated 1980-01-01 so the same sources give the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "pydebianadmin"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: build_wheel.py OUTPUT_DIR", file=sys.stderr)
        return 2
    print(build(Path(argv[1])))
    return 0


def build(output: Path) -> Path:
    project = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    dist_info = f"{name}-{version}.dist-info"
    files = {f"{PACKAGE}/{p.name}": p.read_bytes() for p in _package_files()}
    files[f"{dist_info}/METADATA"] = _metadata(project).encode()
    files[f"{dist_info}/WHEEL"] = _wheel_file().encode()
    record_path = f"{dist_info}/RECORD"
    files[record_path] = _record(files, record_path).encode()
    output.mkdir(parents=True, exist_ok=True)
    wheel = output / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        # RECORD goes last, as the spec recommends.
        for path in sorted(files, key=lambda p: (p == record_path, p)):
            entry = zipfile.ZipInfo(path, ZIP_EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, files[path])
    return wheel


def _package_files() -> list[Path]:
    source = HERE / PACKAGE
    return sorted([*source.glob("*.py"), source / "py.typed"])


def _metadata(project: dict[str, object]) -> str:
    readme = (HERE / "README.md").read_text()
    return (
        "Metadata-Version: 2.1\n"
        f"Name: {project['name']}\n"
        f"Version: {project['version']}\n"
        f"Summary: {project['description']}\n"
        f"Requires-Python: {project['requires-python']}\n"
        "Description-Content-Type: text/markdown\n"
        "\n"
        f"{readme}"
    )


def _wheel_file() -> str:
    return "Wheel-Version: 1.0\nGenerator: build_wheel.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _record(files: dict[str, bytes], record_path: str) -> str:
    """One `path,sha256=DIGEST,SIZE` line per file; RECORD lists itself without hash."""
    lines = []
    for path in sorted(files):
        digest = base64.urlsafe_b64encode(hashlib.sha256(files[path]).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={digest},{len(files[path])}")
    lines.append(f"{record_path},,")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv))
