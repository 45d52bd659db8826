"""Which configuration a run belongs to: the key the report selects runs by (never by recency alone).

What a method's result depends on is read from its registry entry (`lmmreg.methods.get_method`): the params
sections it declares, whether it reads LMM-derived inputs (then the describe setting is part of it), whether it
reads the class-prompt embeddings (then `clip.class_prompt` is), and how alpha enters.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lmmreg.config import Params, stable_hash, to_dict
from lmmreg.describe.setting import answers_identity
from lmmreg.methods import get_method


def method_alpha(method: str, alpha: float) -> float | None:
    """The alpha a method's result depends on: None where it plays no part."""
    return get_method(method).alpha_value(alpha)


def _setting(params: Params, dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        node = getattr(node, part)
    return to_dict(node)


def baseline_settings(params: Params, method: str) -> dict[str, Any]:
    """The `baselines.*` sections a method declares, as plain values (part of its identity, logged with its runs)."""
    return {s: _setting(params, s) for s in get_method(method).settings if s.startswith("baselines.")}


# The regime study's variables (lmmreg.study): a run's study point is their values; everything else in the
# configuration is its study id. Values are strings, as MLflow stores them.
STUDY_VARIABLES = ("alpha", "shots", "centroids_from", "describe_noise", "n_descriptions", "normalize",
                   "reg_reduction", "head_init", "reg_target")
_STUDY_TRAIN_KEYS = ("shots", "centroids_from", "normalize", "reg_reduction", "head_init", "reg_target")


def study_point(params: Params) -> dict[str, str]:
    """The values of STUDY_VARIABLES in `params` (describe noise: the scripted describer's `options.noise`)."""
    t, noise = params.train, params.describe.options.get("noise")
    return {"alpha": repr(float(params.alpha)), "shots": str(t.shots),
            # at shots: all both choices are the whole train split: one point, not two
            "centroids_from": t.centroids_from if t.shots != "all" else "shots",
            "describe_noise": repr(float(noise)) if isinstance(noise, (int, float)) else "n/a",
            "n_descriptions": str(params.describe.n_descriptions), "normalize": str(t.normalize).lower(),
            "reg_reduction": t.reg_reduction, "head_init": t.head_init,
            # J_reg's target only where it is a control: a point without it is the paper's (runs from before too)
            **({"reg_target": t.reg_target} if t.reg_target != "lmm" else {})}


# Study variables a point names only where they differ from these (so points of runs from before them still match).
POINT_DEFAULTS = {"reg_target": "lmm"}


def full_point(point: dict[str, str]) -> dict[str, str]:
    """`point` with every study variable it leaves out at its default (POINT_DEFAULTS): what slicing compares."""
    return {**POINT_DEFAULTS, **point}


def sparse_point(point: dict[str, str]) -> dict[str, str]:
    """`point` without the study variables at their default (the inverse of `full_point`): what is printed."""
    return {k: v for k, v in point.items() if POINT_DEFAULTS.get(k) != v}


def at_point(params: Params, point: dict[str, str]) -> Params:
    """`params` with the study variables of `point` (as `study_point` writes them) applied; a variable the point
    does not name (a run from before it existed) or cannot set ("n/a" noise) keeps its `params` value.

    The inverse of `study_point` where the point is reachable, so `run_identity(at_point(params, p), ...)` is the
    configuration each method had at point p: the report finds a method's runs there by that id, so a run that
    incremental training reused unchanged stands at every point that differs only in what the method ignores."""
    t, d = params.train, params.describe
    shots = point.get("shots", str(t.shots))
    shots_v = "all" if shots == "all" else int(shots)
    train = dataclasses.replace(
        t, shots=shots_v, normalize=point.get("normalize", str(t.normalize).lower()) == "true",
        reg_reduction=point.get("reg_reduction", t.reg_reduction), head_init=point.get("head_init", t.head_init),
        reg_target=point.get("reg_target", "lmm"),
        # at shots: all, study_point folds centroids_from into "shots"; the run kept the params' own value
        centroids_from=t.centroids_from if shots_v == "all" else point.get("centroids_from", t.centroids_from))
    options = dict(d.options)
    noise = point.get("describe_noise", "n/a")
    if noise != "n/a" and not (isinstance(options.get("noise"), (int, float)) and options["noise"] == float(noise)):
        options["noise"] = float(noise)  # (an equal value keeps its YAML type: 0 and 0.0 hash differently)
    describe = dataclasses.replace(d, options=options,
                                   n_descriptions=int(point.get("n_descriptions", d.n_descriptions)))
    return dataclasses.replace(params, alpha=float(point.get("alpha", params.alpha)), train=train,
                               describe=describe)


def study_id(params: Params, *, dataset: str, data_digest: str) -> str:
    """The configuration with the study variables left out: the runs the regime study compares."""
    train = {k: v for k, v in to_dict(params.train).items() if k != "methods" and k not in _STUDY_TRAIN_KEYS}
    options = {k: v for k, v in params.describe.options.items() if k != "noise"}
    describe = dataclasses.replace(params.describe, n_descriptions=0, options=options)
    return stable_hash({"dataset": dataset, "data": data_digest, "source": to_dict(params.source(dataset)),
                        "clip": to_dict(params.clip), "train": train,
                        "describe": answers_identity(describe)})


def run_identity(params: Params, *, dataset: str, method: str, data_digest: str) -> dict[str, str]:
    """Which configuration a (dataset, method) run belongs to, independent of seed and recency.

    `config_id` hashes every setting the result depends on (data, CLIP, describe setting where the method
    uses the LMM or its head starts from the centroids, training config with its shots, alpha where it plays
    a part); `ablation_id` is the same without alpha. The regime study groups runs by `study_id` instead.
    """
    parts = identity_parts(params, dataset=dataset, method=method, data_digest=data_digest)
    alpha = parts.pop("alpha")
    return {"config_id": stable_hash({**parts, "alpha": alpha}), "ablation_id": stable_hash(parts),
            "alpha": "none" if alpha is None else repr(alpha)}


def uses_lmm(params: Params, method: str) -> bool:
    """Whether a method's result depends on the LMM's descriptions (its inputs, or a head started from the
    centroids)."""
    spec = get_method(method)
    head_init = params.train.head_init if "train" in spec.settings else "random"
    return spec.uses_lmm or head_init == "centroids"


def uses_class_prompt(params: Params, method: str) -> bool:
    """Whether a method's result depends on the class-prompt embeddings (`clip.class_prompt`)."""
    spec = get_method(method)
    head_init = params.train.head_init if "train" in spec.settings else "random"
    return spec.uses_class_prompt or head_init == "class_text"


def identity_parts(params: Params, *, dataset: str, method: str, data_digest: str) -> dict[str, Any]:
    """Every setting a (dataset, method) result depends on, as plain values (what `run_identity` hashes; the
    train stage's plan files hold it, so DVC re-trains a method only when one of these changed)."""
    spec = get_method(method)
    train = to_dict(params.train)
    train.pop("methods")
    if not spec.reads_alpha:  # how J_reg is reduced and normalised, and its target, cannot matter where alpha * J_reg
        train.pop("reg_reduction")  # is 0 or absent
        train.pop("normalize")
        train.pop("reg_target")
    elif train["reg_target"] == "lmm":  # the paper's target: the ids of runs from before the controls stay as they were
        train.pop("reg_target")
    engine_trained = "train" in spec.settings  # trained by the engine with `train:` (these use train.head_init)
    clip = to_dict(params.clip)
    if not uses_class_prompt(params, method):
        clip.pop("class_prompt")
    base = {"dataset": dataset, "data": data_digest, "source": to_dict(params.source(dataset)),
            "clip": clip, "method": method, "train": train if engine_trained else None,
            "describe": answers_identity(params.describe) if uses_lmm(params, method) else None}
    baselines = baseline_settings(params, method)
    if baselines:  # only where declared, so the ids of the paper's own methods stay as they were
        base["baselines"] = baselines
    point = study_point(params)
    if method == "zero_shot_lmm":  # its classifier is the centroids, which few-shot draws per seed
        base["shots"] = [point["shots"], point["centroids_from"]]
    elif spec.trains and not engine_trained and params.train.shots != "all":  # a baseline fitted on the K shots
        base["shots"] = point["shots"]
    return {**base, "alpha": method_alpha(method, params.alpha)}
