"""The fleet benchmark's workload for pyinfra: a directory and K files with
given content and mode, read from the workload file named by FLEET_WORKLOAD
(keys dir, dir_mode, files: [{name, content, mode}])."""

import io
import json
import os

from pyinfra.operations import files

with open(os.environ["FLEET_WORKLOAD"], encoding="utf-8") as handle:
    workload = json.load(handle)

files.directory(name="Directory", path=workload["dir"], mode=workload["dir_mode"])
for item in workload["files"]:
    files.put(
        name=f"File {item['name']}",
        src=io.StringIO(item["content"]),
        dest=f"{workload['dir']}/{item['name']}",
        mode=item["mode"],
    )
