"""Runs a deployment: ``python -m troops run deploy.py``.

``python -m troops inspect REPORT deploy.py`` reads deploy.py without running
any deployable and writes the node's roles and every role's hosts to REPORT
(JSON), for ``troops roles`` and ``troops hosts``.
"""

from __future__ import annotations

import sys

import troops


def _execute(path: str) -> int:
    """Runs the file as ``python3 PATH`` would, as module ``__main__``.

    Not runpy.run_path: runpy, pkgutil and traceback cost more than deploy.py
    itself on a small node, and every deploy starts a fresh interpreter.
    """
    sys.argv = [path]
    # deploy.py stays __main__ while its deployables run, as it does when
    # run directly.
    main = type(sys)("__main__")
    main.__file__ = path
    sys.modules["__main__"] = main
    try:
        with open(path, "rb") as source:
            code = compile(source.read(), path, "exec")
        exec(code, main.__dict__)
    except SystemExit as stop:
        # As the interpreter does: an int is the status, anything else is
        # printed and means failure.
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:
        _print_traceback()
        return 1
    return 0


def _print_traceback() -> None:
    import traceback

    # Drop the frames of this runner so the traceback starts in deploy.py.
    kind, value, tb = sys.exc_info()
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    traceback.print_exception(kind, value, tb)


def main(argv: list[str]) -> int:
    troops._state.managed = True
    if len(argv) == 2 and argv[0] == "run":
        status = _execute(argv[1])
        if status != 0:
            return status
        try:
            troops._run_deployables()
        except BaseException:
            _print_traceback()
            return 1
        return 0
    if len(argv) == 3 and argv[0] == "inspect":
        status = _execute(argv[2])
        if status == 0:
            troops._report(argv[1])
        return status
    print("usage: python -m troops run DEPLOY.PY | inspect REPORT DEPLOY.PY", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
