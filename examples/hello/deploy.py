"""An example deployment: greets, and writes a page only where it is wanted.

Run it with Troops (`troops deploy --repository=.` in a git repository holding
this file), or directly: `python3 deploy.py` with the troops module importable.
"""

import os
import pathlib

import troops

troops.define_role("web", hosts=["shellbox-1.example.com", "shellbox-2.example.com"])
troops.activate_role("greeter")


@troops.deployable()
def greet():
    print(f"hello from {troops.hostname()}, which has the roles {troops.roles()}")


@troops.deployable(roles=["web"])
def page():
    # Relocated like the rest of Troops, so trying this example changes nothing
    # outside TROOPS_ROOT.
    root = pathlib.Path(os.environ.get("TROOPS_ROOT", "/"))
    page = root / "srv/www/index.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(f"<h1>{troops.hostname()}</h1>\n")
    print(f"wrote {page}")
