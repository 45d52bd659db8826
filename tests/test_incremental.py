"""An ablation costs what it changes: with the real `dvc` on a scratch repository, a params change re-trains only
the methods whose plan it changes, the run-cache restores an earlier alpha without training, MLflow gets no
duplicate run of an unchanged method, and the parent run still carries every method's accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.dvc_repo import DVC, dvc_params, make_repo, run
from tests.test_dvc_experiments import ran

pytestmark = pytest.mark.slow

METHODS = ["zero_shot", "zero_shot_lmm", "linear_probe", "concat", "finetune", "lmm_reg", "coop"]


def _trained(out: str) -> set[str]:
    return {s.split("-", 1)[1] for s in ran(out) if s.startswith("train@demo-")}


def _runs(repo: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lmmreg")
    return client.search_runs([exp.experiment_id], max_results=10000)


def _children(repo: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in _runs(repo):
        if r.data.tags.get("lmmreg.kind") == "child":
            counts[r.data.tags["lmmreg.method"]] = counts.get(r.data.tags["lmmreg.method"], 0) + 1
    return counts


def _newest_parent(repo: Path):
    parents = [r for r in _runs(repo) if r.data.tags.get("lmmreg.kind") == "parent"]
    return max(parents, key=lambda r: r.info.start_time)


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> tuple[Path, dict]:
    repo = tmp_path_factory.mktemp("incremental") / "repo"
    params = dvc_params()
    params["train"]["methods"] = METHODS
    env = make_repo(repo, params=params)
    out = run([DVC, "repro"], repo, env, timeout=1800)  # 13 stages' startups: minutes on a shared CI machine
    assert _trained(out) == set(METHODS)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline run"], repo, env)
    return repo, env


def test_unchanged_configuration_changes_nothing(committed):
    repo, env = committed
    assert "Data and pipelines are up to date." in run([DVC, "status"], repo, env)
    tables = (repo / "reports/tables.md").read_bytes()
    metrics = json.loads((repo / "metrics/demo.json").read_text())["demo"]
    assert set(metrics["test_acc"]) == set(metrics["test_acc_std"]) == set(METHODS)
    out = run([DVC, "repro", "-f", "-s", "report"], repo, env)  # the report alone again, from the same runs
    assert _trained(out) == set() and ran(out) == {"report"}
    assert (repo / "reports/tables.md").read_bytes() == tables


def test_each_change_re_trains_only_what_it_touches(committed):
    repo, env = committed
    before = _children(repo)
    assert before == {m: 1 for m in METHODS}  # one seed

    out = run([DVC, "exp", "run", "-S", "alpha=0.1"], repo, env)
    assert _trained(out) == {"lmm_reg"}
    assert {"plan@demo", "summarize@demo", "report"} <= ran(out) and "features@demo" not in ran(out)
    assert _children(repo) == {**before, "lmm_reg": 2}  # no duplicate run of an unchanged method
    parent = _newest_parent(repo)
    assert {f"test_acc.{m}" for m in METHODS} <= set(parent.data.metrics)
    reused = json.loads(parent.data.tags["lmmreg.reused_runs"])
    assert len(reused) == len(METHODS) - 1 and parent.data.tags["lmmreg.n_new_runs"] == "1"
    assert "alpha=0.1" in parent.info.run_name
    new = [r for r in _runs(repo) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert [r.data.tags["lmmreg.method"] for r in new] == ["lmm_reg"]
    # A model is logged only for a run this experiment trained (else its version is reused), and only when it is
    # at least as good as the champion (else runs.json says why not).
    model = json.loads((repo / "models/demo/runs.json").read_text())["model"]
    if model["method"] != "lmm_reg":
        assert model["reused"], model
    else:
        assert model["champion"] or "below the champion's" in model["not_logged"], model

    # Back to the committed alpha: DVC's run-cache restores lmm_reg's outputs, nothing trains, no run is logged.
    out = run([DVC, "exp", "run", "-S", "alpha=0.01"], repo, env)
    assert _trained(out) == set() and "Stage 'train@demo-lmm_reg' is cached" in out
    assert _children(repo)["lmm_reg"] == 2

    out = run([DVC, "exp", "run", "-S", "baselines.coop.lr=0.01"], repo, env)
    assert _trained(out) == {"coop"}
    out = run([DVC, "exp", "run", "-S", "train.lr=0.001"], repo, env)
    assert _trained(out) == {"linear_probe", "concat", "finetune", "lmm_reg"}  # the engine-trained methods
    # A describe change reaches the methods that read the LMM's output, and nothing else.
    out = run([DVC, "exp", "run", "-S", "describe.options.noise=0.5"], repo, env)
    assert {"describe@demo", "embed_text@demo", "centroids@demo"} <= ran(out)
    assert _trained(out) == {"zero_shot_lmm", "concat", "lmm_reg"}


def test_a_code_change_re_trains_what_runs_that_code(committed):
    """The train stages depend on their plan alone; the plan holds the digest of their code (lmmreg.plan): a
    change to the report's code re-trains nothing, a change to the training engine re-trains every method."""
    repo, env = committed
    try:
        report = repo / "src/lmmreg/report/tables.py"
        report.write_text(report.read_text() + "\n# a report-only change\n")
        out = run([DVC, "exp", "run"], repo, env)
        assert _trained(out) == set() and "report" in ran(out) and "plan@demo" not in ran(out)
        engine = repo / "src/lmmreg/engine.py"
        engine.write_text(engine.read_text() + "\n# a training change\n")
        out = run([DVC, "exp", "run"], repo, env)
        assert "plan@demo" in ran(out) and _trained(out) == set(METHODS)
    finally:
        run(["git", "checkout", "--", "src"], repo, env)
