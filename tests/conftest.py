"""Shared fixtures: a shrunken copy of the project's params and an isolated MLflow store."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from lmmreg.config import Params, parse_params

REPO = Path(__file__).resolve().parents[1]


def load_raw_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def without_pretraining(raw: dict) -> dict:
    """Random-init CLIP and no pretrain_clip stage: unit tests never read a checkpoint a real run left behind."""
    raw["clip"]["pretrained"] = ""
    raw["pretrain"]["enabled"] = False
    return raw


# The baselines shrunk the same way: a few epochs, their search grids cut to two points.
SMALL_BASELINES = {
    "prolip": {"steps": 3, "lr_grid": [1.0e-3, 1.0e-5], "reg_grid": [1.0, 0.0]},
    "tip_adapter": {"epochs": 2, "beta_steps": 4, "alpha_steps": 4},
    "clip_adapter": {"epochs": 2},
    "coop": {"epochs": 2, "n_ctx": 4},
    "linear_probe_lbfgs": {"c_grid": [1.0, 1.0e-2], "search_steps": 1, "max_iter": 100},
    "lp_pp": {"epochs": 5},
    "clap": {"epochs": 2},
    "cross_modal": {"iters": 20, "eval_every": 5, "lr_grid": [1.0e-3], "weight_decay_grid": [0.0, 1.0e-2]},
}


def small_raw_params(**overrides) -> dict:
    """The real params.yaml, shrunk so the whole pipeline runs in seconds (random-init CLIP, no pretraining)."""
    raw = without_pretraining(copy.deepcopy(load_raw_params()))
    raw["demo"].update({"n_classes": 3, "train_per_class": 8, "test_per_class": 4, "image_size": 32})
    raw["seeds"] = [0, 1]
    raw["train"]["epochs"] = 3
    for name, values in SMALL_BASELINES.items():
        raw["baselines"][name].update(values)
    raw["report"]["bootstrap"] = 50
    for key, value in overrides.items():
        node = raw
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return raw


@pytest.fixture
def small_params() -> Params:
    return parse_params(small_raw_params())


@pytest.fixture
def mlflow_root(tmp_path, monkeypatch) -> Path:
    """An empty project root with its own MLflow store (DVC_ROOT points there, as under `dvc exp run`)."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root
