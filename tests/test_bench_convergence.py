"""benchmarks/bench_convergence.py --tiny: the folders it builds, and both sides of the convergence check on them
(a flagged run carries the MLflow tag, the train log's warning and the report's †; a passing one none of them)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_bench(monkeypatch):
    """The script as a module (registered while the test runs: its dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location("bench_convergence", REPO / "benchmarks/bench_convergence.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_convergence", module)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts its checkout's src/ first
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tiny_run_builds_the_folders_and_marks_what_the_check_flags(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    bench = load_bench(monkeypatch)
    work, out = tmp_path / "work", tmp_path / "bench.md"
    res = bench.main(["--tiny", "--random-init", "--work", str(work), "--out", str(out)])
    tiny = bench.TINY

    # the folders: imagefolder layout with the sizes asked for, every image described
    assert res["clip"] == "" and "RANDOM-INIT" in res["clip_says"]
    digits, shapes = res["layouts"]["digits"], res["layouts"]["shapes"]
    assert list(digits["train"]) == ["one", "zero"] and sum(digits["train"].values()) == tiny.digits_train
    assert sum(digits["test"].values()) == tiny.digits_test
    assert len(shapes["train"]) == tiny.shapes_classes
    assert set(shapes["train"].values()) == {tiny.shapes_train_per_class}
    assert set(shapes["test"].values()) == {tiny.shapes_test_per_class}
    for name, n in (("digits", tiny.digits_train + tiny.digits_test),
                    ("shapes", tiny.shapes_classes * (tiny.shapes_train_per_class + tiny.shapes_test_per_class))):
        assert len(list((work / "raw" / name).glob("*/*/*.png"))) == n
        records = [json.loads(ln) for ln in (work / "imports" / f"{name}.jsonl").read_text().splitlines()]
        assert len(records) == n and all(len(r["descriptions"]) == 10 for r in records)
        assert all((work / "raw" / name / r["id"]).is_file() for r in records)

    # both sides: the paper's recipe (5 epochs here) is flagged everywhere, and each flag is in all three places
    rows = res["rows"]
    assert {(r["folder"], r["lr"], r["epochs"]) for r in rows} >= {("digits", 1.0e-4, 5), ("shapes", 1.0e-4, 5)}
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    for r in rows:
        assert r["dagger"] == (r["flagged"] > 0) == r["log_warned"], r
        result = json.loads((work / "models" / r["folder"] / f"lr{r['lr']:g}-e{r['epochs']}" /
                             "methods/linear_probe/result.json").read_text())
        for run in result["runs"].values():
            tags = client.get_run(run["run_id"]).data.tags
            assert tags["lmmreg.converged"] == ("false" if r["flagged"] else "true")
            if r["flagged"]:
                assert "under-trained" in tags["lmmreg.converged_reason"]
                assert run["final"]["train_acc"] < run["final"]["reference_train_acc"] - 5
    assert rows[0]["flagged"] == 1 and "under-trained" in rows[0]["reason"]
    assert any(r["flagged"] == 0 for r in rows)  # the other side: a longer recipe that passes (shapes, lr 1e-2)

    # the run's section went to --out, not to the repository's reports/
    md = out.read_text()
    assert md.startswith("# The convergence check") and "RANDOM-INIT CLIP" in md
    assert md.count("\n| digits |") + md.count("\n| shapes |") == len(rows)
