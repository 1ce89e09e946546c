"""The fleet benchmark's workload for Troops: a directory and K files with
given content and mode, with PyDebianAdmin's helpers. The bench writes the
workload beside this file as workload.py (`WORKLOAD = {dir, dir_mode, files:
[{name, content, mode}]}`), a Python literal as the floor's script has it."""

import os

import troops
from pydebianadmin import files
from workload import WORKLOAD


@troops.deployable()
def workload():
    files.directory(WORKLOAD["dir"], mode=int(WORKLOAD["dir_mode"], 8))
    for item in WORKLOAD["files"]:
        path = os.path.join(WORKLOAD["dir"], item["name"])
        files.file(path, content=item["content"], mode=int(item["mode"], 8))
