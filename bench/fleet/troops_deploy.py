"""The fleet benchmark's workload for Troops: a directory and K files with
given content and mode, read from workload.json beside this file (keys dir,
dir_mode, files: [{name, content, mode}]), with PyDebianAdmin's helpers."""

import json
import os

import troops
from pydebianadmin import files

HERE = os.path.dirname(os.path.abspath(__file__))


@troops.deployable()
def workload():
    with open(os.path.join(HERE, "workload.json"), encoding="utf-8") as handle:
        work = json.load(handle)
    files.directory(work["dir"], mode=int(work["dir_mode"], 8))
    for item in work["files"]:
        path = os.path.join(work["dir"], item["name"])
        files.file(path, content=item["content"], mode=int(item["mode"], 8))
