"""The convergence check on synthetic curves and accuracies with known answers, and its reference probe."""

from __future__ import annotations

import math

import pytest
import torch

from lmmreg.config import parse_params
from lmmreg.convergence import (
    ACC_GAP_MAX,
    KNOBS,
    LATE_DESCENT_MAX,
    check_convergence,
    late_descent,
    reference_train_acc,
)
from lmmreg.engine import fit
from tests.conftest import small_raw_params


def history(losses: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "train_loss": v, "train_ce": v, "train_reg": 0.0, "test_acc": 50.0}
            for i, v in enumerate(losses)]


def exponential(epochs: int, *, rate: float, floor: float) -> list[float]:
    """A curve that decays at `rate` per epoch towards `floor` (converged once rate * epochs >> 1)."""
    return [floor + 2.3 * math.exp(-rate * e) for e in range(epochs)]


def test_late_descent_known_values():
    # 100 epochs, window 10: mean of the last 10 (1.0) against the 10 before (2.0), of a whole fall 4.0 -> 1.0
    assert late_descent([4.0] + [3.0] * 79 + [2.0] * 10 + [1.0] * 10) == pytest.approx(1 / 3)
    line = [2.30 - 1e-4 * e for e in range(100)]  # a straight, barely moving descent: still a tenth of it at the end
    assert late_descent(line) == pytest.approx(10 / 94.5)  # 10 epochs between the means, of 94.5 since epoch 1
    assert late_descent([1.0] * 100) != late_descent([1.0] * 100)  # never fell: nan
    assert math.isnan(late_descent([1.0, 2.0])) and math.isnan(late_descent([1.0]))
    # 5 evaluated epochs: one on each side (round(0.5) = 0, at least 1): fall 2 -> 1 of the whole 5 -> 1
    assert late_descent([5.0, 4.0, 3.0, 2.0, 1.0]) == pytest.approx(0.25)


def test_converged_curve_passes():
    losses = exponential(100, rate=0.3, floor=0.4)  # flat long before the end
    assert late_descent(losses) < 1e-6
    # a constrained baseline far behind a free linear head, but flat: its capacity, not its budget
    c = check_convergence(history(losses), train_acc=60.0, reference_acc=90.0, contains_reference=False)
    assert c.converged and c.reason == ""
    assert c.tags() == {"lmmreg.converged": "true", "lmmreg.converged_reason": ""}
    assert check_convergence(history(losses), train_acc=88.0, reference_acc=90.0, contains_reference=True).converged


def test_flat_loss_short_of_the_reference_is_flagged_when_the_model_class_holds_it():
    # digits at lr 1e-4: the random head's excess loss goes in 20 epochs, then a crawl that looks like a plateau
    losses = [2.58 - 0.28 * min(e, 20) / 20 - 1e-5 * e for e in range(100)]
    assert late_descent(losses) < LATE_DESCENT_MAX
    c = check_convergence(history(losses), train_acc=11.0, reference_acc=88.8, contains_reference=True)
    assert not c.converged and "training loss flat" in c.reason and "88.8%" in c.reason
    assert check_convergence(history(losses), train_acc=11.0, reference_acc=88.8, contains_reference=False).converged


def test_still_falling_curve_behind_the_reference_is_flagged():
    losses = [2.3 - 0.0001 * e for e in range(100)]  # Adam at a tiny lr: a straight, slow descent
    fall = late_descent(losses)
    assert fall > LATE_DESCENT_MAX
    c = check_convergence(history(losses), train_acc=15.0, reference_acc=70.0, contains_reference=False)
    assert not c.converged
    assert c.tags()["lmmreg.converged"] == "false"
    assert "15.0%" in c.reason and "70.0%" in c.reason and KNOBS in c.reason
    assert "still falling: 11% of its descent in the last 10% of epochs" in c.reason
    assert c.metrics() == {"train_acc": 15.0, "reference_train_acc": 70.0,
                           "train_loss_late_descent": pytest.approx(fall)}


def test_falling_loss_of_a_run_that_fits_its_data_passes():
    # fine-tuning to 100 % training accuracy: cross-entropy keeps shrinking, nothing to fix
    losses = [0.5 * math.exp(-0.01 * e) for e in range(100)]
    assert late_descent(losses) > LATE_DESCENT_MAX
    assert check_convergence(history(losses), train_acc=100.0, reference_acc=100.0, contains_reference=False).converged


def test_thresholds_are_the_boundaries():
    losses = [2.3 - 0.004 * e for e in range(100)]

    def judge(train_acc: float, **kw) -> bool:
        return check_convergence(history(losses), train_acc=train_acc, reference_acc=70.0, contains_reference=False,
                                 **kw).converged

    assert judge(70.0 - ACC_GAP_MAX)
    assert not judge(70.0 - ACC_GAP_MAX - 0.1)
    slow = judge(10.0, late_descent_max=late_descent(losses) + 1e-6)
    assert slow  # below the stated share: flat enough


def test_no_trend_counts_as_still_falling():
    c = check_convergence(history([2.0]), train_acc=10.0, reference_acc=80.0, contains_reference=False)
    assert not c.converged and "a single epoch" in c.reason
    assert check_convergence(history([2.0]), train_acc=79.0, reference_acc=80.0, contains_reference=False).converged
    # learnt nothing at all
    flat = check_convergence(history([2.3] * 50), train_acc=10.0, reference_acc=80.0, contains_reference=False)
    assert not flat.converged and "did not fall (2.3 to 2.3)" in flat.reason


def test_reference_probe_fits_separable_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(25)  # [100]
    x = torch.nn.functional.one_hot(y, 4).float() * 3 + 0.3 * torch.randn(100, 4, generator=g)  # [100, 4]
    assert reference_train_acc(x, y) == 100.0
    noise = torch.randn(100, 8, generator=g)
    assert reference_train_acc(noise, y) < 100.0  # no structure: only memorisation of 100 points in 8 dims
    assert reference_train_acc(x, torch.zeros(100, dtype=torch.long)) == 100.0  # one class


class Head(torch.nn.Module):
    def __init__(self, d: int, c: int):
        super().__init__()
        self.lin = torch.nn.Linear(d, c)

    def forward(self, x):
        return x, self.lin(x)


@pytest.mark.parametrize("lr, epochs, converged", [(1.0e-5, 20, False), (5.0e-2, 60, True)])
def test_engine_runs_are_judged_by_their_recipe(lr, epochs, converged):
    """The engine's training accuracy and loss curve, against the reference on the same features: a too small lr
    is flagged, a sufficient one passes."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(5).repeat_interleave(40)  # [200]
    x = torch.randn(5, 16, generator=g)[y] + 0.5 * torch.randn(200, 16, generator=g)  # [200, 16] separable blobs
    torch.manual_seed(0)
    cfg = parse_params(small_raw_params(**{"train.lr": lr, "train.epochs": epochs})).train
    res = fit(Head(16, 5), train_x=x, train_y=y, test_x=x[:10], test_y=y[:10], centroids=None, alpha=0.0, cfg=cfg,
              seed=0)
    assert res.train_acc is not None and 0.0 <= res.train_acc <= 100.0
    c = check_convergence(res.history, train_acc=res.train_acc, reference_acc=reference_train_acc(x, y),
                          contains_reference=True)  # a linear head: the reference's own model class
    assert c.converged is converged, c



@pytest.mark.slow
def test_under_trained_runs_are_tagged_logged_and_marked(small_params, mlflow_root, caplog):
    """The train stage on the shrunken demo with an lr too small to move anything: every run tagged in MLflow,
    one warning naming the knobs, `converged` in result.json, a dagger and the reason in reports/tables.md."""
    import dataclasses
    import json
    import logging

    from mlflow.tracking import MlflowClient

    from lmmreg.stages import report, train_all
    from tests.test_pipeline import prepare_inputs

    root = mlflow_root
    params = dataclasses.replace(small_params, train=dataclasses.replace(
        small_params.train, methods=["linear_probe", "gda"], lr=1.0e-7, epochs=5))
    paths = prepare_inputs(params, root)
    with caplog.at_level(logging.WARNING, logger="lmmreg.seed_run"):
        train_all.main(params, dataset="demo", manifest=paths.manifest, features=paths.features, text=paths.text,
                       centroids=paths.centroids, models=root / "models/demo", metrics=root / "metrics/demo.json",
                       plots=root / "plots/demo.csv", log_model=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("demo linear_probe: 2 of 2 seeds under-trained")
    assert "train.epochs, train.lr" in warnings[0]
    result = json.loads((root / "models/demo/methods/linear_probe/result.json").read_text())
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    for run in result["runs"].values():
        assert run["converged"] == "false" and run["final"]["converged"] == 0.0
        assert run["final"]["train_acc"] < run["final"]["reference_train_acc"] - 5
        tags = client.get_run(run["run_id"]).data.tags
        assert tags["lmmreg.converged"] == "false" and "under-trained" in tags["lmmreg.converged_reason"]
    gda = json.loads((root / "models/demo/methods/gda/result.json").read_text())
    for run in gda["runs"].values():  # training-free: nothing to check, no tag
        assert run["converged"] is None and "lmmreg.converged" not in client.get_run(run["run_id"]).data.tags

    report.main(params, prepared=root / "data/prepared", out=root / "reports")
    md = (root / "reports/tables.md").read_text()
    probe = next(ln for ln in md.splitlines() if ln.startswith("| CLIP (image emb.) [1] |"))
    assert "(n=2) †" in probe
    assert "seed 0: under-trained" in md and "seed 1: under-trained" in md


def test_a_baseline_is_told_its_own_knobs():
    losses = [2.3 - 0.004 * e for e in range(100)]
    c = check_convergence(history(losses), train_acc=10.0, reference_acc=80.0, contains_reference=False,
                          knobs="baselines.coop's epochs (or steps) and lr")
    assert c.reason.endswith("raise baselines.coop's epochs (or steps) and lr") and "train.lr" not in c.reason
