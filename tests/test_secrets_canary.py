"""Secrets never land anywhere (issue 31): canary values in the describer's API key, the DVC remote's S3 secret and
the MLflow token, then the pipeline for real (`dvc repro` through the warm interpreter, the `openai` describer
against a local OpenAI-compatible server, `dvc push` to a local-directory remote), then every file the run wrote
is searched for them: the repository (dvc.lock, .dvc/, mlflow.db, mlartifacts/, metrics, reports, logs, .git),
the remote, the zygote's directory (its log), DVC's site cache, HOME and TMPDIR (both fresh for the run). Files
are searched as stored; the run commits nothing to git, so no run output sits compressed in .git/objects.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dvc_repo import DVC, dvc_params, git_env, make_repo, run
from tests.test_describe_openai import FakeChatServer

pytestmark = pytest.mark.slow

KEY_ENV = "OPENAI_API_KEY"  # describe.options.api_key_env


def _files(root: Path) -> list[Path]:
    """Every regular file under `root`, not through symlinks (the repository's .venv link)."""
    out = []
    for d, _dirs, names in os.walk(root):
        out += [Path(d) / n for n in names if (Path(d) / n).is_file() and not (Path(d) / n).is_symlink()]
    return out


def test_no_canary_in_anything_the_run_wrote(tmp_path):
    canaries = {var: f"canary-{var.lower()}-{secrets.token_hex(12)}"
                for var in (KEY_ENV, "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_TOKEN")}
    repo, remote, zdir = tmp_path / "repo", tmp_path / "remote", tmp_path / "zygote"
    home, tmp, site = tmp_path / "home", tmp_path / "tmp", tmp_path / "dvc-site"
    for d in (home, tmp):
        d.mkdir()
    env = git_env(venv_on_path=False, HOME=str(home), TMPDIR=str(tmp), DVC_SITE_CACHE_DIR=str(site),
                  LMMREG_ZYGOTE="1", LMMREG_ZYGOTE_DIR=str(zdir), LMMREG_ZYGOTE_GPU="1", **canaries)
    with FakeChatServer(key=canaries[KEY_ENV]) as server:
        params = dvc_params(**{"describe.backend": "openai", "describe.model": server.model, "describe.options": {
            "base_url": server.url, "api_key_env": KEY_ENV, "concurrency": 4, "timeout_s": 60.0, "max_retries": 3,
            "retry_base_s": 0.01, "retry_max_wait_s": 0.05}})
        try:
            make_repo(repo, params=params, venv=True, env=env)
            out = run([DVC, "repro"], repo, env)
            run([DVC, "remote", "add", "-d", "team", str(remote)], repo, env)
            run([DVC, "push"], repo, env)
            served = list(zdir.glob("*.sock"))  # the warm interpreter's server, still up after the stages
        finally:
            subprocess.run([sys.executable, "-S", str(repo / "bin/zygote.py"), "stop"], capture_output=True,
                           env={**env, "LMMREG_ZYGOTE_DIR": str(zdir)})
    # The run did what it says: the describer sent the key (the server checks every request's header), the stages
    # ran through the warm interpreter (its socket directory and log), the remote holds the outputs.
    assert "Running stage 'train@demo-lmm_reg'" in out and "Running stage 'describe@demo'" in out
    assert server.requests and server.problems == []
    assert list(zdir.glob("*.log")) and len(served) == 1, f"stages split over {len(served)} servers: see DENY_ENV"
    assert _files(remote) and (repo / "mlflow.db").is_file() and (repo / "dvc.lock").is_file()
    assert any(p.parts[-2:] == ("reports", "tables.md") for p in _files(repo))

    files = [f for root in (repo, remote, zdir, site, home, tmp) if root.exists() for f in _files(root)]
    needles = [c.encode() for c in canaries.values()]
    hits = [f"{f}: {n.decode()}" for f in files for n in needles if n in f.read_bytes()]
    assert hits == [], "\n".join(hits)
    print(f"\n{len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB searched, "
          f"{len(server.requests)} describer requests: no canary")
