"""Tests of the troops module as deployments use it: run as real scripts."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap
import unittest

MODULE_DIR = pathlib.Path(__file__).resolve().parent.parent


class DeployScript(unittest.TestCase):
    """Runs deploy.py files in a fresh interpreter, as a user would."""

    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = pathlib.Path(self.tmp.name)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(MODULE_DIR),
            "TROOPS_ROOT": str(self.dir / "root"),
            "TROOPS_HOSTNAME": "shellbox-1.example.com",
        }

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def run_script(self, source: str, *args: str) -> subprocess.CompletedProcess[str]:
        (self.dir / "deploy.py").write_text(textwrap.dedent(source))
        return subprocess.run(
            [sys.executable, *args],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )

    def node_config(self, text: str) -> None:
        etc = self.dir / "root/etc/troops"
        etc.mkdir(parents=True)
        (etc / "troops.toml").write_text(text)


class DirectRun(DeployScript):
    """`python3 deploy.py` behaves as under Troops."""

    def test_deployables_run_after_the_file_in_order(self) -> None:
        out = self.run_script(
            """
            import troops
            @troops.deployable()
            def first(): print("first")
            @troops.deployable(roles=["web"])
            def second(): print("second")
            print("top level done")
            troops.activate_role("web")
            """,
            "deploy.py",
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = [l for l in out.stdout.splitlines() if not l.startswith("troops:")]
        self.assertEqual(lines, ["top level done", "first", "second"])

    def test_an_exception_stops_deployables(self) -> None:
        out = self.run_script(
            """
            import troops
            @troops.deployable
            def never(): print("should not run")
            raise RuntimeError("broken")
            """,
            "deploy.py",
        )
        self.assertEqual(out.returncode, 1)
        self.assertNotIn("should not run", out.stdout)
        self.assertIn("RuntimeError: broken", out.stderr)

    def test_a_failing_deployable_fails_the_run(self) -> None:
        out = self.run_script(
            """
            import troops
            @troops.deployable()
            def fails(): raise ValueError("nope")
            @troops.deployable()
            def after(): print("after")
            """,
            "deploy.py",
        )
        self.assertEqual(out.returncode, 1)
        self.assertIn("ValueError: nope", out.stderr)
        self.assertNotIn("after", out.stdout.replace("troops: running after", ""))

    def test_skipped_deployable_says_why(self) -> None:
        out = self.run_script(
            """
            import troops
            @troops.deployable(roles=["db"])
            def db(): print("db ran")
            """,
            "deploy.py",
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("troops: skipping db (needs a role of: db)", out.stdout)
        self.assertNotIn("db ran", out.stdout)


class Roles(DeployScript):
    def roles_of(self, source: str) -> list[str]:
        out = self.run_script(textwrap.dedent(source) + "\nprint(troops.roles())\n", "deploy.py")
        self.assertEqual(out.returncode, 0, out.stderr)
        return eval(out.stdout.strip().splitlines()[-1])

    def test_activated_defined_and_configured_roles(self) -> None:
        self.node_config('roles = ["monitored"]\nbranch = "main"\n')
        roles = self.roles_of(
            """
            import troops
            troops.activate_role("zeta")
            troops.define_role("web", hosts=["SHELLBOX-1.example.com."])
            troops.define_role("db", hosts=["db-1.example.com"])
            """
        )
        self.assertEqual(roles, ["monitored", "web", "zeta"])

    def test_roles_passed_by_troops_deploy_replace_the_file(self) -> None:
        # troops deploy has read troops.toml already; the module then leaves
        # the file alone (a broken one would fail the deploy otherwise).
        self.node_config('roles = "not a list"\n')
        self.env["TROOPS_NODE_ROLES"] = "monitored web"
        roles = self.roles_of("import troops\n")
        self.assertEqual(roles, ["monitored", "web"])
        self.env["TROOPS_NODE_ROLES"] = ""
        self.assertEqual(self.roles_of("import troops\n"), [])

    def test_hosts_are_sorted_and_merged(self) -> None:
        out = self.run_script(
            """
            import troops
            troops.define_role("web", hosts=["b.example.com", "a.example.com"])
            troops.define_role("web", hosts=["c.example.com"])
            print(troops.hosts("web"), troops.hosts("none"))
            """,
            "deploy.py",
        )
        self.assertEqual(
            out.stdout.strip(), "['a.example.com', 'b.example.com', 'c.example.com'] []"
        )

    def test_have_role_and_hostname_override(self) -> None:
        self.env["TROOPS_HOSTNAME"] = "Other.Example.Com"
        out = self.run_script(
            """
            import troops
            troops.define_role("web", hosts=["shellbox-1.example.com"])
            print(troops.hostname(), troops.have_role("web"))
            """,
            "deploy.py",
        )
        self.assertEqual(out.stdout.strip(), "other.example.com False")

    def test_bad_arguments_are_refused(self) -> None:
        for call in [
            'troops.define_role("web", hosts="a.example.com")',
            'troops.activate_role("")',
            'troops.deployable(roles="web")',
        ]:
            out = self.run_script(f"import troops\n{call}\n", "deploy.py")
            self.assertEqual(out.returncode, 1, call)

    def test_bad_node_configuration_is_reported(self) -> None:
        self.node_config('roles = "web"\n')
        out = self.run_script("import troops\ntroops.roles()\n", "deploy.py")
        self.assertEqual(out.returncode, 1)
        self.assertIn("roles must be a list of strings", out.stderr)


class Runner(DeployScript):
    """`python -m troops`, which troops deploy and troops roles use."""

    def test_inspect_reports_without_running_deployables(self) -> None:
        out = self.run_script(
            """
            import troops
            troops.define_role("web", hosts=["shellbox-1.example.com"])
            @troops.deployable()
            def nope(): print("deployable ran")
            """,
            "-m",
            "troops",
            "inspect",
            "report.json",
            "deploy.py",
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertNotIn("deployable ran", out.stdout)
        report = json.loads((self.dir / "report.json").read_text())
        self.assertEqual(report, {"roles": ["web"], "hosts": {"web": ["shellbox-1.example.com"]}})

    def test_run_exit_status_and_message(self) -> None:
        out = self.run_script("import sys\nsys.exit(4)\n", "-m", "troops", "run", "deploy.py")
        self.assertEqual(out.returncode, 4)
        out = self.run_script("raise SystemExit('why')\n", "-m", "troops", "run", "deploy.py")
        self.assertEqual((out.returncode, out.stderr.strip()), (1, "why"))

    def test_deploy_py_runs_as_main_with_its_directory_importable(self) -> None:
        (self.dir / "helpers.py").write_text("NAME = 'from the repository'\n")
        out = self.run_script(
            """
            import sys
            import troops
            from helpers import NAME
            print(__name__, __file__, sys.argv, NAME)
            @troops.deployable()
            def later():
                print("deployable sees", sys.modules["__main__"].__file__)
            """,
            "-m",
            "troops",
            "run",
            "deploy.py",
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(
            out.stdout.splitlines(),
            [
                "__main__ deploy.py ['deploy.py'] from the repository",
                "troops: running later",
                "deployable sees deploy.py",
            ],
        )

    def test_traceback_starts_in_deploy_py(self) -> None:
        out = self.run_script("def broken():\n    raise RuntimeError('disk on fire')\nbroken()\n", "-m", "troops", "run", "deploy.py")
        self.assertEqual(out.returncode, 1)
        frames = [line for line in out.stderr.splitlines() if line.strip().startswith("File ")]
        self.assertEqual(len(frames), 2, out.stderr)
        self.assertTrue(all('"deploy.py"' in frame for frame in frames), out.stderr)
        self.assertTrue(out.stderr.rstrip().endswith("RuntimeError: disk on fire"), out.stderr)

    def test_usage(self) -> None:
        out = self.run_script("", "-m", "troops")
        self.assertEqual(out.returncode, 2)
        self.assertIn("usage:", out.stderr)


if __name__ == "__main__":
    unittest.main()
