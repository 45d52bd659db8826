"""The user's DVC workflow, for real: `dvc repro`, `dvc exp run -S alpha=...` and a queued experiment.

Runs the real `dvc` on a scratch git repository holding the project's dvc.yaml and a shrunken params.yaml,
and checks that every experiment's MLflow runs land in the project's store (not in DVC's deleted temp
folders) with their alpha, and that `dvc exp show` lists the experiments with their accuracy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.dvc_repo import DVC, make_repo, run, wait_for_queue

pytestmark = pytest.mark.slow


def ran(out: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` log says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", out))


@pytest.fixture
def scratch_repo(tmp_path) -> tuple[Path, dict]:
    repo = tmp_path / "repo"
    return repo, make_repo(repo)


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
    run([DVC, "repro"], repo, env)
    assert (repo / "reports/tables.md").is_file()
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline run"], repo, env)

    out = run([DVC, "exp", "run", "-S", "alpha=0.1"], repo, env)
    ran_ = ran(out)
    assert "train@demo-lmm_reg" in ran_ and "train@demo-finetune" not in ran_ and "features@demo" not in ran_

    run([DVC, "exp", "run", "--queue", "-S", "alpha=0.5"], repo, env)
    run([DVC, "queue", "start"], repo, env)
    status = wait_for_queue(repo, env, timeout=600)
    assert "Success" in status, status
    # A queued experiment starts from a clean checkout of the committed baseline: it must restore the unchanged
    # stages' outputs from the cache (above all the LMM store), not describe every image again.
    name = next(line.split()[1] for line in status.splitlines() if "Success" in line)
    logs = run([DVC, "queue", "logs", name], repo, env)
    assert "Running stage 'train@demo-lmm_reg'" in logs and "Running stage 'train@demo-finetune'" not in logs
    for stage in ("describe@demo", "embed_text@demo", "features@demo"):
        assert f"Running stage '{stage}'" not in logs, logs[-3000:]
    assert not list((repo / ".dvc/tmp/exps").glob("tmp*")), "DVC's temp experiment folder should be gone"
    # Its runs stamped the workspace (not only the temp folder): that is how `dvc repro report` knows to re-run.
    assert json.loads((repo / "metrics/last_run.json").read_text())["dvc.exp_name"] == name

    runs = _lmm_reg_runs(repo)
    by_alpha = {r["alpha"]: r for r in runs}
    assert {"0.01", "0.1", "0.5"} <= set(by_alpha), runs
    assert by_alpha["0.5"]["exp"] and by_alpha["0.1"]["exp"]  # tagged with the DVC experiment name
    assert all(r["epochs"] == 3 for r in runs)
    assert all(r["artifact_uri"].startswith((repo / "mlartifacts").as_uri()) for r in runs)

    shown = json.loads(run([DVC, "exp", "show", "--json"], repo, env))
    text = json.dumps(shown)
    assert '"alpha": 0.5' in text and '"alpha": 0.1' in text and "test_acc" in text

    # In the workspace, the report picks up the queued sweep: every alpha once in the ablation table.
    run(["git", "checkout", "params.yaml"], repo, env)
    run([DVC, "repro", "report"], repo, env)
    ablation = (repo / "reports/tables.md").read_text().split("alpha (the alpha ablation)")[1].split("###")[0]
    for alpha in ("| 0.01 |", "| 0.1 |", "| 0.5 |"):
        assert ablation.count(alpha) == 1, ablation
    assert "Data and pipelines are up to date." in run([DVC, "status"], repo, env)  # no stage is always_changed


def test_study_params_re_run_only_the_stages_they_touch(scratch_repo):
    """A shots change re-trains both methods (and the report); a description-noise change re-describes, then
    re-runs embed_text, centroids and LMM-Reg.'s training; the report's regime study then shows both variables."""
    repo, env = scratch_repo
    run([DVC, "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline run"], repo, env)

    train = {"plan@demo", "train@demo-finetune", "train@demo-lmm_reg", "summarize@demo", "report"}
    assert ran(run([DVC, "exp", "run", "-S", "train.shots=2"], repo, env)) == train
    out = run([DVC, "exp", "run", "-S", "train.shots=all", "-S", "describe.options.noise=0.5"], repo, env)
    # finetune reads no LMM output, and its shots are back at the committed value: DVC's run-cache restores it
    assert ran(out) == {"describe@demo", "embed_text@demo", "centroids@demo", *(train - {"train@demo-finetune"})}
    md = (repo / "reports/tables.md").read_text()
    assert "description noise (scripted describer), at the current configuration" in md
    assert "shots per class, at the current configuration but describe_noise = 0.15" in md
    assert (repo / "reports/study/describe_noise.png").is_file() and (repo / "reports/study/shots.png").is_file()
