"""The README is a user's guide whose every command still runs: each command of its code blocks is checked against
what it names (a Makefile target, a params.yaml key as DVC reads the raw file, a dvc.yaml stage, a module, a file),
every doc it links exists, and it stays short (issue 33: about 200 lines; internals live in docs/architecture.md)."""

from __future__ import annotations

import importlib.util
import re
import shlex

import yaml

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def _commands() -> list[list[str]]:
    """Every shell command of the README's ```bash blocks, split at `&&` and `;`, comments dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            for part in re.split(r"&&|;", line):
                if part.strip():
                    out.append(shlex.split(part.strip()))
    return out


def _has_key(raw: dict, dotted: str) -> bool:
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_readme_is_short_and_links_what_exists():
    assert len(README.splitlines()) <= 220
    for target in re.findall(r"\]\(((?:docs|reports)/[^)#]+)\)", README):
        assert (REPO / target).exists(), target


def test_every_readme_command_names_what_exists():
    makefile = (REPO / "Makefile").read_text()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    checked = 0
    for cmd in _commands():
        if cmd[0] == "make":
            assert re.search(rf"^{re.escape(cmd[1])}:", makefile, flags=re.M), cmd
        elif cmd[:3] == ["dvc", "exp", "run"] or cmd[:2] == [".venv/bin/dvc", "exp"]:
            for i, tok in enumerate(cmd):
                if tok == "-S":
                    key = cmd[i + 1].split("=")[0]
                    assert _has_key(params, key), f"README sets {key!r}, which params.yaml does not have"
        elif cmd[:2] == ["dvc", "repro"] and len(cmd) > 2:
            assert cmd[2] in stages, cmd
        elif cmd[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(cmd[2]) is not None, cmd
        elif cmd[0] in ("cp",) or cmd[:1] == ["python"]:
            assert (REPO / cmd[1]).exists(), cmd
        elif cmd[:3] == ["dvc", "exp", "show"]:  # the command that fits a terminal: the one test_dvc_compare runs
            from tests.test_dvc_compare import COMPARE

            assert cmd == ["dvc", *COMPARE], cmd
        checked += 1
    assert checked >= 15
