"""The few-shot protocol: K-shot sampling, centroids from the shots only, the step budget, head initialisation,
and shots reaching the configuration id and MLflow."""

import dataclasses
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmmreg.artifacts import Artifact
from lmmreg.centroids import compute_centroids
from lmmreg.config import TrainConfig, parse_params
from lmmreg.engine import budget_schedule, fit
from lmmreg.heads import EmbeddingClassifier, init_head
from lmmreg.identity import run_identity, study_id, study_point
from lmmreg.methods.base import MethodInputs
from lmmreg.shots import few_shot_inputs, sample_shots, total_steps
from tests.conftest import small_raw_params


def _labels(per_class=(10, 10, 10)):
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]  # classes interleaved


def test_sampling_is_deterministic_per_seed_k_per_class_and_nested():
    y = _labels()
    a, b = sample_shots(y, 4, seed=1), sample_shots(y, 4, seed=1)
    assert torch.equal(a, b)
    assert torch.equal(a, torch.sort(a).values) and len(set(a.tolist())) == len(a)  # sorted, no replacement
    assert torch.bincount(y[a], minlength=3).tolist() == [4, 4, 4]
    assert not torch.equal(a, sample_shots(y, 4, seed=2))  # another seed, another subset
    for k in (1, 2, 8):  # one permutation per class and seed: the K-shot subsets grow by inclusion
        assert set(sample_shots(y, k, seed=1).tolist()) <= set(sample_shots(y, k + 1, seed=1).tolist())
    assert torch.equal(sample_shots(y, "all", seed=3), torch.arange(len(y)))


def test_a_class_with_fewer_than_k_uses_all_with_a_warning(caplog):
    y = _labels((10, 2, 10))
    with caplog.at_level(logging.WARNING, logger="lmmreg.shots"):
        idx = sample_shots(y, 4, seed=0, classes=["a", "b", "c"])
    assert torch.bincount(y[idx], minlength=3).tolist() == [4, 2, 4]
    assert "class 'b' has only 2 training images" in caplog.text


@pytest.mark.parametrize("bad", [0, -1, "few", True])
def test_bad_shots_fail_naming_the_key(bad):
    with pytest.raises(ValueError, match="train.shots"):
        sample_shots(_labels(), bad, seed=0)
    raw = small_raw_params(**{"train.shots": bad})
    with pytest.raises(ValueError, match="train.shots"):
        parse_params(raw)


def _inputs_and_descriptions(n_per_class=6, n_classes=3, n_desc=2, d=4):
    """Train rows with ids, their descriptions (each description embedding encodes its image), and inputs."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    ids = [f"img{i}" for i in range(len(y))]
    emb = torch.randn(len(y) * n_desc, d, generator=g)
    desc = Artifact([f"{i}#{j}" for i in ids for j in range(n_desc)], y.repeat_interleave(n_desc), {"emb": emb})
    full, _ = compute_centroids(emb, desc.labels, torch.ones(len(emb), dtype=torch.bool), ["a", "b", "c"])
    inp = MethodInputs(tail=nn.Identity(), train_feat=torch.randn(len(y), d, generator=g), test_feat=torch.zeros(2, d),
                       train_y=y, test_y=torch.zeros(2, dtype=torch.long), centroids=full, class_text=torch.eye(3, d),
                       train_text_mean=torch.randn(len(y), d, generator=g), test_text_mean=torch.zeros(2, d))
    return inp, ids, desc


def test_default_centroids_come_from_the_shots_only_no_leak():
    inp, ids, desc = _inputs_and_descriptions()
    cfg = TrainConfig(shots=2)
    sub, kept = few_shot_inputs(inp, cfg, seed=0, train_ids=ids, desc=desc, classes=["a", "b", "c"])
    assert len(kept) == 6 and len(sub.train_y) == 6 and torch.equal(sub.train_y, inp.train_y[[ids.index(i)
                                                                                              for i in kept]])
    owners = [i.rsplit("#", 1)[0] for i in desc.ids]
    mask = torch.tensor([o in kept for o in owners])
    expected = torch.stack([desc.tensors["emb"][mask & (desc.labels == c)].mean(0) for c in range(3)])
    assert torch.allclose(sub.centroids, expected)
    # The leak test proper: rewriting every description of the images left out changes nothing.
    poisoned = Artifact(desc.ids, desc.labels, {"emb": torch.where(mask[:, None], desc.tensors["emb"], 1e6)})
    sub2, _ = few_shot_inputs(inp, cfg, seed=0, train_ids=ids, desc=poisoned, classes=["a", "b", "c"])
    assert torch.equal(sub2.centroids, sub.centroids)
    # centroids_from: train keeps the full training split's centroids (the documented alternative).
    sub3, _ = few_shot_inputs(inp, dataclasses.replace(cfg, centroids_from="train"), seed=0, train_ids=ids,
                              desc=poisoned, classes=["a", "b", "c"])
    assert torch.equal(sub3.centroids, inp.centroids)
    # shots: all is the unchanged inputs.
    same, all_ids = few_shot_inputs(inp, TrainConfig(), seed=0, train_ids=ids, desc=None, classes=["a", "b", "c"])
    assert same is inp and all_ids == ids


@pytest.mark.parametrize("k", [1, 2, 4, 6])
def test_validation_images_lie_outside_the_shots_min_k_4_per_class_and_follow_the_seed(k):
    inp, ids, desc = _inputs_and_descriptions(n_per_class=12)
    cfg = TrainConfig(shots=k)
    sub, kept = few_shot_inputs(inp, cfg, seed=0, train_ids=ids, desc=desc, classes=["a", "b", "c"])
    rows = {tuple(r.tolist()): i for i, r in enumerate(inp.train_feat)}  # every feature row is unique
    val = [rows[tuple(r.tolist())] for r in sub.val_feat]
    assert not {ids[i] for i in val} & set(kept)  # disjoint from the K shots
    assert torch.equal(sub.val_y, inp.train_y[val])
    assert torch.bincount(sub.val_y, minlength=3).tolist() == [min(k, 4)] * 3
    again, _ = few_shot_inputs(inp, cfg, seed=0, train_ids=ids, desc=desc, classes=["a", "b", "c"])
    assert torch.equal(again.val_feat, sub.val_feat)  # deterministic per seed
    other, _ = few_shot_inputs(inp, cfg, seed=1, train_ids=ids, desc=desc, classes=["a", "b", "c"])
    assert not torch.equal(other.val_feat, sub.val_feat)


def test_a_class_with_too_few_images_outside_the_shots_gives_what_it_has(caplog):
    from lmmreg.validation import outside_shots

    y = torch.tensor([0] * 10 + [1] * 5)
    shots = torch.tensor([0, 1, 2, 3, 10, 11, 12, 13])  # 4 shots each: class 1 has one image left
    with caplog.at_level(logging.WARNING):
        val = outside_shots(y, shots, shots=4, seed=0, classes=["a", "b"])
    assert torch.bincount(y[val]).tolist() == [4, 1] and not set(val.tolist()) & set(shots.tolist())
    assert "['b']" in caplog.text


def test_step_budget_gives_every_k_the_full_data_steps_and_about_epochs_evaluations():
    cfg = TrainConfig(epochs=10, batch_size=16, lr=1e-2)
    steps = total_steps(cfg, n_full=96)  # 10 epochs of 6 batches
    assert steps == 60
    run_cfg = dataclasses.replace(cfg, steps=steps)
    assert budget_schedule(run_cfg, 96) == (10, 1, 60)  # the full-data run is unchanged
    assert budget_schedule(run_cfg, 3) == (60, 6, 60)  # 1-shot x 3 classes: one batch per epoch, 60 epochs
    assert budget_schedule(dataclasses.replace(run_cfg, budget="epochs"), 3) == (10, 1, 10)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 4, generator=g), torch.arange(3).repeat(8)
    counted = []

    class Counting(nn.Linear):
        def forward(self, inp):
            if self.training:
                counted.append(1)
            return super().forward(inp)

    res = fit(EmbeddingClassifier(Counting(4, 4), 4, 3), train_x=x[:20], train_y=y[:20], test_x=x[20:],
              test_y=y[20:], centroids=None, alpha=0.0, cfg=dataclasses.replace(run_cfg, batch_size=8), seed=0)
    assert len(counted) == 60  # exactly the budget, the last epoch cut short
    epochs = [h["epoch"] for h in res.history]
    assert epochs[0] == 1 and epochs[-1] == res.reported_epoch == 20 and 9 <= len(epochs) <= 12


def test_class_text_head_starts_as_the_zero_shot_classifier():
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(50, 8, generator=g) * 10, torch.randn(5, 8, generator=g)
    model = EmbeddingClassifier(nn.Identity(), 8, 5)
    init_head(model, "class_text", class_text=text, centroids=torch.zeros(5, 8), train_in=x)
    _, logits = model(x)
    zero_shot = F.normalize(x, dim=-1) @ F.normalize(text, dim=-1).T
    assert torch.equal(logits.argmax(-1), zero_shot.argmax(-1))
    # The scale sets the mean logit norm to the initial CLIP temperature whatever the embedding norm.
    assert torch.allclose(model.head.weight.norm(dim=-1) * x.norm(dim=-1).mean(), torch.full((5,), 1 / 0.07))
    before = model.head.weight.clone()
    init_head(model, "random", class_text=text, centroids=text, train_in=x)
    assert torch.equal(model.head.weight, before)
    wide = EmbeddingClassifier(nn.Identity(), 16, 5)  # concat: [x ; description mean]
    init_head(wide, "centroids", class_text=text, centroids=text, train_in=torch.cat([x, x], -1))
    assert torch.allclose(wide.head.weight[:, :8], wide.head.weight[:, 8:])


def test_shots_are_part_of_the_configuration_id():
    p = parse_params(small_raw_params())
    k4 = parse_params(small_raw_params(**{"train.shots": 4}))
    for method in ("linear_probe", "finetune", "lmm_reg", "zero_shot_lmm"):
        a, b = (run_identity(q, dataset="demo", method=method, data_digest="d")["config_id"] for q in (p, k4))
        assert a != b, method
    zs = [run_identity(q, dataset="demo", method="zero_shot", data_digest="d")["config_id"] for q in (p, k4)]
    assert zs[0] == zs[1]  # zero-shot trains nothing and uses no centroids
    # One study: shots, alpha and the description noise move the point, not the study id.
    noisy = parse_params(small_raw_params(**{"describe.options": {"noise": 0.5}, "alpha": 0.1}))
    assert len({study_id(q, dataset="demo", data_digest="d") for q in (p, k4, noisy)}) == 1
    assert study_point(k4)["shots"] == "4" and study_point(noisy)["describe_noise"] == "0.5"
    assert study_point(p)["centroids_from"] == study_point(
        parse_params(small_raw_params(**{"train.centroids_from": "train"})))["centroids_from"]  # same set at all
    other = parse_params(small_raw_params(**{"train.lr": 1.0e-3}))
    assert study_id(other, dataset="demo", data_digest="d") != study_id(p, dataset="demo", data_digest="d")


@pytest.mark.slow
def test_shots_reach_mlflow_and_the_logged_subset(small_params, mlflow_root):
    from lmmreg import tracking
    from tests.test_pipeline import run_pipeline

    params = dataclasses.replace(small_params, train=dataclasses.replace(small_params.train, shots=2,
                                                                       methods=["zero_shot_lmm", "lmm_reg"]))
    summary = run_pipeline(params, mlflow_root)
    runs = tracking.search_child_runs({"lmmreg.config_id": summary["lmm_reg"]["config_id"]})
    assert len(runs) == len(params.seeds)
    manifest = [line.split(",") for line in (mlflow_root / "data/prepared/demo/manifest.csv").read_text().splitlines()]
    header = manifest[0]
    split = {r[header.index("id")]: (r[header.index("split")], r[header.index("label")]) for r in manifest[1:]}
    subsets = {}
    for r in runs:
        assert r["params"]["train.shots"] == "2" and r["params"]["train.budget"] == "steps"
        assert json.loads(r["tags"]["lmmreg.point"])["shots"] == "2"
        assert r["metrics"]["n_train_images"] == 2 * params.demo.n_classes
        # The full-data run's steps: epochs x ceil(train images / batch), whatever the shots.
        assert r["metrics"]["train_steps"] == params.train.epochs * -(-params.demo.n_classes
                                                                     * params.demo.train_per_class // 64)
        shots = tracking.load_json_artifact(r["run_id"], "shots.json")
        assert shots["shots"] == 2 and len(shots["ids"]) == 2 * params.demo.n_classes
        assert all(split[i][0] == "train" for i in shots["ids"])
        assert sorted(split[i][1] for i in shots["ids"]) == sorted([str(c) for c in range(params.demo.n_classes)] * 2)
        subsets[int(r["tags"]["lmmreg.seed"])] = shots["ids"]
    assert subsets[0] != subsets[1]  # drawn per seed
    ident = run_identity(params, dataset="demo", method="lmm_reg", data_digest=runs[0]["tags"]["lmmreg.data_digest"])
    assert runs[0]["tags"]["lmmreg.config_id"] == ident["config_id"]
