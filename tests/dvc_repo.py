"""A scratch git + DVC repository holding the project's pipeline, for the tests that run the real `dvc`.

It holds what a clone of the project holds (src/, bin/, dvc.yaml, .gitignore, the tracked placeholder files)
and a shrunken params.yaml (one seed, two methods, three epochs), committed; its MLflow store is created
before any parallel run. `venv=True` links the project's .venv into it and leaves the venv off PATH, as for a
user who never activated it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.conftest import REPO, small_raw_params

BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")
TRACKED = ("src", "bin", "dvc.yaml", ".gitignore", ".dvcignore", "data/imports")


def run(cmd: list[str], cwd: Path, env: dict, timeout: int = 600) -> str:
    """Run a command, return its stdout; a failure shows the tail of both streams."""
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def dvc_params(**overrides) -> dict:
    raw = small_raw_params(**overrides)
    raw["seeds"] = [0]
    raw["train"]["methods"] = ["finetune", "lmm_reg"]
    return raw


def git_env(*, venv_on_path: bool = True, **extra: str) -> dict:
    """The environment minus DVC, MLflow, AWS and venv variables; PATH holds the venv only when asked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_", "AWS_", "VIRTUAL_ENV"))}
    path = "/usr/local/bin:/usr/bin:/bin"
    env.update(PATH=f"{BIN}:{env.get('PATH', path)}" if venv_on_path else path, GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", **extra)
    env.pop("PYTHONPATH", None)
    return env


def make_repo(repo: Path, *, params: dict | None = None, venv: bool = False, env: dict | None = None) -> dict:
    """Create and commit the scratch repository at `repo`; returns the environment to run `dvc` in."""
    repo.mkdir(parents=True)
    for name in TRACKED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.is_file():
            shutil.copy2(src, repo / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(params or dvc_params(), sort_keys=False))
    if venv:
        (repo / ".venv").symlink_to(REPO / ".venv")
    env = env if env is not None else git_env(venv_on_path=not venv)
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run([DVC, "init", "-q"], repo, env)
    shutil.copy2(REPO / ".dvc/config", repo / ".dvc/config")  # the project's DVC settings (cache link types)
    shutil.copytree(REPO / ".dvc/plots", repo / ".dvc/plots")  # the offline page `dvc plots show` fills (the config)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "init"], repo, env)
    run([str(repo / "bin/python"), "-m", "lmmreg.tracking", "init"], repo, env)  # the store, before parallel runs
    return env


def wait_for_queue(repo: Path, env: dict, timeout: float = 900) -> str:
    """Wait until no queued experiment is queued or running; returns `dvc queue status`."""
    deadline = time.time() + timeout
    while True:
        status = run([DVC, "queue", "status"], repo, env)
        if ("Queued" not in status and "Running" not in status) or time.time() > deadline:
            return status
        time.sleep(5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_server(cmd: list[str], *, url: str, log: Path, timeout: float = 240, env: dict | None = None):
    """Run a server (on 127.0.0.1) for the duration of the block, once `url` answers 200."""
    import httpx

    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
        try:
            deadline = time.time() + timeout
            while True:
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                time.sleep(1)
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)
