"""The user's DVC workflow, for real: `dvc repro`, `dvc exp run -S alpha=...` and a queued experiment.

Runs the real `dvc` on a scratch git repository holding the project's dvc.yaml and a shrunken params.yaml,
and checks that every experiment's MLflow runs land in the project's store (not in DVC's deleted temp
folders) with their alpha, and that `dvc exp show` lists the experiments with their accuracy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, small_raw_params

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int = 600) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.fixture
def scratch_repo(tmp_path) -> tuple[Path, dict]:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(REPO / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    raw = small_raw_params()
    raw["seeds"] = [0]
    raw["train"]["methods"] = ["finetune", "lmm_reg"]
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    bindir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env.update(PATH=f"{bindir}:{env.get('PATH', '')}", PYTHONPATH=str(repo / "src"), GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    _run(["git", "init", "-q"], repo, env)
    _run(["dvc", "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "init"], repo, env)
    _run([sys.executable, "-m", "lmmreg.tracking", "init"], repo, env)  # the store exists before any parallel run
    return repo, env


def _lmm_reg_runs(repo: Path) -> list[dict]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lmmreg")
    runs = client.search_runs([exp.experiment_id], "tags.`lmmreg.method` = 'lmm_reg'")
    return [{"alpha": r.data.params["alpha"], "exp": r.data.tags.get("dvc.exp_name"),
             "epochs": len(client.get_metric_history(r.info.run_id, "test_acc")),
             "artifact_uri": r.info.artifact_uri} for r in runs]


def test_repro_exp_run_and_queue_log_to_the_project_store(scratch_repo):
    repo, env = scratch_repo
    _run(["dvc", "repro"], repo, env)
    assert (repo / "reports/tables.md").is_file()
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "baseline run"], repo, env)

    out = _run(["dvc", "exp", "run", "-S", "alpha=0.1"], repo, env)
    assert "Running stage 'train@demo'" in out and "Running stage 'features@demo'" not in out  # only what α affects

    _run(["dvc", "exp", "run", "--queue", "-S", "alpha=0.5"], repo, env)
    _run(["dvc", "queue", "start"], repo, env)
    deadline = time.time() + 600
    while time.time() < deadline:
        status = _run(["dvc", "queue", "status"], repo, env)
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert "Success" in status, status
    # A queued experiment starts from a clean checkout of the committed baseline: it must restore the unchanged
    # stages' outputs from the cache (above all the LMM store), not describe every image again.
    name = next(line.split()[1] for line in status.splitlines() if "Success" in line)
    logs = _run(["dvc", "queue", "logs", name], repo, env)
    assert "Running stage 'train@demo'" in logs
    for stage in ("describe@demo", "embed_text@demo", "features@demo"):
        assert f"Running stage '{stage}'" not in logs, logs[-3000:]
    assert not list((repo / ".dvc/tmp/exps").glob("tmp*")), "DVC's temp experiment folder should be gone"

    runs = _lmm_reg_runs(repo)
    by_alpha = {r["alpha"]: r for r in runs}
    assert {"0.01", "0.1", "0.5"} <= set(by_alpha), runs
    assert by_alpha["0.5"]["exp"] and by_alpha["0.1"]["exp"]  # tagged with the DVC experiment name
    assert all(r["epochs"] == 3 for r in runs)
    assert all(r["artifact_uri"].startswith((repo / "mlartifacts").as_uri()) for r in runs)

    shown = json.loads(_run(["dvc", "exp", "show", "--json"], repo, env))
    text = json.dumps(shown)
    assert '"alpha": 0.5' in text and '"alpha": 0.1' in text and "test_acc" in text

    # In the workspace, the report picks up the queued sweep: every alpha once in the ablation table.
    _run(["git", "checkout", "params.yaml"], repo, env)
    _run(["dvc", "repro", "report"], repo, env)
    ablation = (repo / "reports/tables.md").read_text().split("alpha (the alpha ablation)")[1].split("###")[0]
    for alpha in ("| 0.01 |", "| 0.1 |", "| 0.5 |"):
        assert ablation.count(alpha) == 1, ablation


def test_study_params_re_run_only_the_stages_they_touch(scratch_repo):
    """A shots change re-runs train (and the report); a description-noise change re-describes, then re-runs
    embed_text, centroids and train; the report's regime study then shows both variables."""
    import re

    repo, env = scratch_repo
    _run(["dvc", "repro"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "baseline run"], repo, env)

    def ran(out: str) -> set[str]:
        return set(re.findall(r"Running stage '([^']+)'", out))

    assert ran(_run(["dvc", "exp", "run", "-S", "train.shots=2"], repo, env)) == {"train@demo", "report"}
    out = _run(["dvc", "exp", "run", "-S", "train.shots=all", "-S", "describe.options.noise=0.5"], repo, env)
    assert ran(out) == {"describe@demo", "embed_text@demo", "centroids@demo", "train@demo", "report"}
    md = (repo / "reports/tables.md").read_text()
    assert "description noise (scripted describer), at the current configuration" in md
    assert "shots per class, at the current configuration but describe_noise = 0.15" in md
    assert (repo / "reports/study/describe_noise.png").is_file() and (repo / "reports/study/shots.png").is_file()
