"""The leakage audit (issue 29): no method sees the test labels.

Every method of the registry trains twice on the same small features: once as is, once with the test labels
permuted. Whatever a method learns or chooses (its weights, the hyper-parameters its search picked, its test
predictions, every non-test number of its history) is bit-identical; only what is scored against the test labels
(the reported accuracy, each epoch's `test_acc`) changes. The audit iterates over `METHODS`, so a method added to
the registry is audited without touching this file; an input the fixture lacks is built from the entry's `needs`.

The one known exception is `train.report_epoch: best`, which reports the epoch of highest *test* accuracy as the
authors' code prints it: there the reported epoch and weights depend on the test labels, and the report says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch

from lmmreg.config import BaselinesConfig, TrainConfig
from lmmreg.engine import FitResult, percent
from lmmreg.methods import METHODS
from lmmreg.methods.base import MethodInputs, RunContext, embed, run_method
from lmmreg.methods.registry import SEARCH_SETTINGS, MethodEntry
from lmmreg.shots import few_shot_inputs
from tests.test_methods import FAST, NAMES, _inputs
from tests.test_methods import clip as clip  # noqa: F401  (the module's tiny CLIP fixture)

SEED = 0
CFG = TrainConfig(epochs=2, batch_size=8, lr=1.0e-2)  # report_epoch: last, the default
# Caps on the baselines' own budgets (by field name, in every section of `baselines:`): a section added for a new
# method is shrunk too. The audit checks what depends on what: each method needs only to classify the fixture.
CAPS = {"epochs": 2, "steps": 5, "iters": 60, "eval_every": 15, "warmup_iters": 2, "alpha_every": 1,
        "beta_steps": 5, "alpha_steps": 5, "search_steps": 2, "max_iter": 200}
GRID_KEEP = 2  # the first entries of every searched grid (lists ending in _grid, batch_sizes)


def shrunk(cfg: BaselinesConfig) -> BaselinesConfig:
    """FAST's settings, with every other section's budgets capped (CAPS) and its grids cut to GRID_KEEP values."""
    out = {}
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if not dataclasses.is_dataclass(section):
            continue
        small = {}
        for g in dataclasses.fields(section):
            v = getattr(section, g.name)
            if g.name in CAPS and isinstance(v, int) and not isinstance(v, bool):
                small[g.name] = min(v, CAPS[g.name])
            elif isinstance(v, list) and (g.name.endswith("_grid") or g.name == "batch_sizes"):
                small[g.name] = v[:GRID_KEEP]
        out[f.name] = dataclasses.replace(section, **small)
    return dataclasses.replace(cfg, **out)


# CoOp learns its prompt through the tiny CLIP's random text tower: 3 epochs of batch 4 let it classify the fixture
AUDIT = dataclasses.replace(shrunk(FAST), coop=dataclasses.replace(shrunk(FAST).coop, epochs=3, batch_size=4,
                                                                   lr=5.0e-3))


def _descriptions(inp: MethodInputs, g: torch.Generator) -> torch.Tensor:
    """[Ntr, 3, D]: 1-3 description embeddings per training image near its text mean, NaN past its count."""
    n, d = inp.train_text_mean.shape
    desc = inp.train_text_mean[:, None] + 0.1 * torch.randn(n, 3, d, generator=g)
    desc[(torch.arange(3)[None] >= 1 + torch.arange(n)[:, None] % 3)] = float("nan")
    return desc


# How to build an input the fixture leaves None, by MethodInputs field: a method that needs another one fails the
# audit naming it, so its builder is added here.
BUILDERS: dict[str, Callable[[MethodInputs, torch.Generator], dict]] = {
    "train_desc": lambda inp, g: {"train_desc": _descriptions(inp, g)},
    "train_aug": lambda inp, g: {"train_aug": inp.train_feat[:, None] + 0.1 * torch.randn(
        len(inp.train_feat), 2, *inp.train_feat.shape[1:], generator=g)},
    "val_feat": lambda inp, g: {"val_feat": inp.train_feat[:8] + 0.1 * torch.randn(inp.train_feat[:8].shape,
                                                                                    generator=g),
                                "val_y": inp.train_y[:8]},
    "val_y": lambda inp, g: BUILDERS["val_feat"](inp, g),
}


def complete(inp: MethodInputs, method: str) -> MethodInputs:
    """The inputs with every field the method's entry `needs` that the fixture lacks built (BUILDERS)."""
    missing = sorted(n for n in METHODS[method].needs if getattr(inp, n) is None)
    g = torch.Generator().manual_seed(7)
    for name in missing:
        if getattr(inp, name) is not None:  # built with another field (val_feat with val_y)
            continue
        if name not in BUILDERS:
            pytest.fail(f"{method} needs {name!r}, which the audit cannot build: add it to BUILDERS")
        inp = dataclasses.replace(inp, **BUILDERS[name](inp, g))
    return inp


def informative(inp: MethodInputs) -> MethodInputs:
    """Text that carries the classes (the tiny random CLIP's own prompt embeddings do not), so that the methods
    reading it classify too and the permuted labels must change their accuracy (see `derange`): class texts and
    centroids at the class means of the frozen training embeddings, each image's description mean near its own
    embedding (a function of its features, never of a test label)."""
    g = torch.Generator().manual_seed(5)
    x, xt = embed(inp.tail, inp.train_feat), embed(inp.tail, inp.test_feat)  # [Ntr, D], [Nte, D]
    means = torch.stack([x[inp.train_y == c].mean(0) for c in range(len(NAMES))])  # [C, D]
    return dataclasses.replace(inp, class_text=means, centroids=means.clone(),
                               train_text_mean=x + 0.1 * x.std() * torch.randn(x.shape, generator=g),
                               test_text_mean=xt + 0.1 * xt.std() * torch.randn(xt.shape, generator=g))


def derange(y: torch.Tensor) -> torch.Tensor:
    """The test labels moved one row on: labels alternate by row, so every label changes (a fixed permutation).
    A prediction matches at most one of y[i] and the new label, so accuracy above 50 % must fall below 50 %."""
    out = torch.roll(y, 1)
    assert (out != y).all()
    return out


@pytest.fixture(scope="module")
def audit_inputs(clip) -> MethodInputs:  # noqa: F811
    return informative(_inputs(clip, n_train=32, n_test=24))


def _same(u: object, v: object) -> bool:
    """Equal, NaN equal to NaN (a history's reg term is NaN where a method has none)."""
    both_nan = isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v)
    return both_nan or u == v


def run(method: str, inp: MethodInputs, cfg: TrainConfig = CFG) -> FitResult:
    return run_method(method, inp, alpha=0.1, cfg=cfg, seed=SEED, baselines=AUDIT)


def assert_same_except_test_scores(method: str, a: FitResult, b: FitResult) -> None:
    """Weights, choices, predictions and every non-test number of the history bit-identical."""
    assert a.state_dict.keys() == b.state_dict.keys(), method
    for k, v in a.state_dict.items():
        w = b.state_dict[k]
        assert torch.equal(v, w) if isinstance(v, torch.Tensor) else v == w, f"{method}: weight {k} differs"
    assert a.chosen == b.chosen, f"{method}: chose {a.chosen} vs {b.chosen}"
    assert torch.equal(a.final.preds, b.final.preds), f"{method}: test predictions differ"
    assert torch.equal(a.final.emb, b.final.emb), f"{method}: test embeddings differ"
    assert a.reported_epoch == b.reported_epoch, method
    assert a.train_acc == b.train_acc, method
    assert len(a.history) == len(b.history), method
    for ra, rb in zip(a.history, b.history, strict=True):
        assert ra.keys() == rb.keys(), method
        assert all(_same(ra[k], rb[k]) for k in ra if k != "test_acc"), \
            f"{method}: a non-test number of the history differs: {ra} vs {rb}"


def assert_only_the_score_moved(method: str, a: FitResult, b: FitResult, y: torch.Tensor, y_perm: torch.Tensor) -> None:
    """Each run is scored against the labels it was given, and the permutation changes the score."""
    correct = int((a.final.preds == y).sum())
    assert a.final.acc == percent(correct, len(y)), method
    assert b.final.acc == percent(int((b.final.preds == y_perm).sum()), len(y)), method
    assert a.final.acc > 50, (f"{method} scores {a.final.acc:.1f} % on the audit's fixture: "
                               "give it the budget to classify it in AUDIT, or the audit cannot tell a moved score")
    assert b.final.acc < 50 and b.final.acc != a.final.acc, method
    if len(a.history) > 1 or "train_loss" in a.history[0]:  # a per-epoch test curve (Fig. 2)
        assert [r["test_acc"] for r in a.history] != [r["test_acc"] for r in b.history], method


@pytest.mark.parametrize("method", sorted(METHODS))
def test_no_method_sees_the_test_labels(audit_inputs, method):
    inp = complete(audit_inputs, method)
    y_perm = derange(inp.test_y)
    a = run(method, inp)
    b = run(method, dataclasses.replace(inp, test_y=y_perm))
    assert_same_except_test_scores(method, a, b)
    assert_only_the_score_moved(method, a, b, inp.test_y, y_perm)


@pytest.mark.parametrize("method", sorted(m for m, e in METHODS.items() if e.engine_trained or set(SEARCH_SETTINGS)
                                           & set(e.settings)))
def test_few_shot_runs_see_no_test_labels_either(audit_inputs, method):
    """The train stage's path under `train.shots: K`: the seed's K-shot inputs (lmmreg.shots.few_shot_inputs, with
    the validation images outside the shots), then the method, as lmmreg.seed_run does. For the paper's methods and
    every method that searches (the others see a subset of the inputs audited above, and no validation images)."""
    cfg = dataclasses.replace(CFG, shots=4, centroids_from="train")  # "shots" reads the descriptions artifact
    ids = [f"tr{i}" for i in range(len(audit_inputs.train_y))]
    inp = complete(audit_inputs, method)
    few, _ = few_shot_inputs(inp, cfg, seed=SEED, train_ids=ids, desc=None, classes=NAMES)
    assert few.val_feat is not None and len(few.train_y) == 4 * len(NAMES)
    y_perm = derange(few.test_y)
    a = run(method, few, cfg)
    b = run(method, dataclasses.replace(few, test_y=y_perm), cfg)
    assert_same_except_test_scores(method, a, b)
    assert a.final.acc != b.final.acc or a.final.acc <= 50, method


def _leaky_probe(inp: MethodInputs, ctx: RunContext) -> FitResult:
    """A method that leaks: the linear probe, trained on the test images with their labels as well."""
    from lmmreg.methods.linear import linear_probe

    return linear_probe(dataclasses.replace(
        inp, train_feat=torch.cat([inp.train_feat, inp.test_feat]), train_y=torch.cat([inp.train_y, inp.test_y]),
        train_text_mean=torch.cat([inp.train_text_mean, inp.test_text_mean]), train_aug=None), ctx)


@dataclasses.dataclass(frozen=True)
class _Planted(MethodEntry):
    """linear_probe's registry entry, running `_leaky_probe` instead."""

    def load(self) -> Callable[..., FitResult]:
        return _leaky_probe


def test_the_audit_catches_a_method_that_reads_the_test_labels(audit_inputs, monkeypatch):
    probe = METHODS["linear_probe"]
    fields = {f.name: getattr(probe, f.name) for f in dataclasses.fields(probe)}
    monkeypatch.setitem(METHODS, "leaky", _Planted(**{**fields, "name": "leaky"}))
    a = run("leaky", audit_inputs)
    b = run("leaky", dataclasses.replace(audit_inputs, test_y=derange(audit_inputs.test_y)))
    with pytest.raises(AssertionError, match="leaky: weight"):
        assert_same_except_test_scores("leaky", a, b)


def test_report_epoch_best_selects_on_test_the_known_exception(audit_inputs):
    """`train.report_epoch: best` (the authors' printed number) picks the epoch, and so the weights reported, by
    test accuracy: the one place a test label decides something. Test labels set to the model's own predictions at
    another epoch make that epoch score 100 %, and `best` reports it, with its weights; under `last` the same two
    label sets give bit-identical weights."""
    best = dataclasses.replace(CFG, epochs=4, lr=1.0e-3, report_epoch="best")  # a slower lr: predictions move
    last = dataclasses.replace(best, report_epoch="last")
    engine = sorted(m for m, e in METHODS.items() if e.engine_trained)
    shown = []
    for method in engine:
        inp = complete(audit_inputs, method)
        honest = run(method, inp, best)
        target = best.epochs if honest.reported_epoch != best.epochs else 1
        preds = run(method, inp, dataclasses.replace(last, epochs=target)).final.preds  # that epoch's predictions
        rigged = run(method, dataclasses.replace(inp, test_y=preds), best)
        assert rigged.final.acc == 100.0, method
        if torch.equal(preds, honest.final.preds):  # the two epochs predict alike: nothing to move
            continue
        assert rigged.reported_epoch != honest.reported_epoch, method
        assert any(not torch.equal(v, rigged.state_dict[k]) for k, v in honest.state_dict.items()), method
        assert_same_except_test_scores(method, run(method, inp, last),
                                       run(method, dataclasses.replace(inp, test_y=preds), last))
        shown.append(method)
    assert shown, f"no engine-trained method ({engine}) predicted differently at two epochs on the fixture"


def test_the_report_states_the_audit_and_marks_report_epoch_best():
    from lmmreg.report.snapshot import Snapshot
    from lmmreg.report.tables import build_tables
    from tests.report_snapshot_fixture import classes, fixture_params

    params = fixture_params()
    md = {e: build_tables(Snapshot([], {}, {}, []), dataclasses.replace(
        params, train=dataclasses.replace(params.train, report_epoch=e)), classes())[0] for e in ("last", "best")}
    audit = "Leakage audit: every method's trained weights and selected hyper-parameters are bit-identical"
    assert audit in md["last"] and audit in md["best"]
    assert "Reported epoch selected on test accuracy" in md["best"]
    assert "Reported epoch selected on test accuracy" not in md["last"] and "report_epoch: best" not in md["last"]
