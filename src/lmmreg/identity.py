"""Which configuration a run belongs to: the key the report selects runs by (never by recency alone).

Deliberately light (config and the describe setting hash only): the report stage depends on it without
depending on the training code.
"""

from __future__ import annotations

import dataclasses

from lmmreg.config import Params, stable_hash, to_dict
from lmmreg.describe.setting import setting_hash

TRAINED = ("linear_probe", "concat", "finetune", "lmm_reg")
# Methods whose result depends on the LMM descriptions (and so on the describe settings).
USES_LMM = ("zero_shot_lmm", "concat", "lmm_reg")


def method_alpha(method: str, alpha: float) -> float | None:
    """The alpha a method's result depends on: None where it plays no part."""
    if method == "lmm_reg":
        return alpha
    return 0.0 if method == "finetune" else None


# The regime study's variables (lmmreg.study): a run's study point is their values; everything else in the
# configuration is its study id. Values are strings, as MLflow stores them.
STUDY_VARIABLES = ("alpha", "shots", "centroids_from", "describe_noise", "n_descriptions", "normalize",
                   "reg_reduction", "head_init")
_STUDY_TRAIN_KEYS = ("shots", "centroids_from", "normalize", "reg_reduction", "head_init")


def study_point(params: Params) -> dict[str, str]:
    """The values of STUDY_VARIABLES in `params` (describe noise: the scripted describer's `options.noise`)."""
    t, noise = params.train, params.describe.options.get("noise")
    return {"alpha": repr(float(params.alpha)), "shots": str(t.shots),
            # at shots: all both choices are the whole train split: one point, not two
            "centroids_from": t.centroids_from if t.shots != "all" else "shots",
            "describe_noise": repr(float(noise)) if isinstance(noise, (int, float)) else "n/a",
            "n_descriptions": str(params.describe.n_descriptions), "normalize": str(t.normalize).lower(),
            "reg_reduction": t.reg_reduction, "head_init": t.head_init}


def study_id(params: Params, *, dataset: str, data_digest: str) -> str:
    """The configuration with the study variables left out: the runs the regime study compares."""
    train = {k: v for k, v in to_dict(params.train).items() if k != "methods" and k not in _STUDY_TRAIN_KEYS}
    options = {k: v for k, v in params.describe.options.items() if k != "noise"}
    describe = dataclasses.replace(params.describe, n_descriptions=0, options=options)
    return stable_hash({"dataset": dataset, "data": data_digest, "source": to_dict(params.source(dataset)),
                        "clip": to_dict(params.clip), "train": train,
                        "describe": [setting_hash(describe), params.describe.on_too_few,
                                     params.describe.too_few_retries]})


def run_identity(params: Params, *, dataset: str, method: str, data_digest: str) -> dict[str, str]:
    """Which configuration a (dataset, method) run belongs to, independent of seed and recency.

    `config_id` hashes every setting the result depends on (data, CLIP, describe setting where the method
    uses the LMM or its head starts from the centroids, training config with its shots, alpha where it plays
    a part); `ablation_id` is the same without alpha. The regime study groups runs by `study_id` instead.
    """
    train = to_dict(params.train)
    train.pop("methods")
    head_init = params.train.head_init if method in TRAINED else "random"
    clip = to_dict(params.clip)
    if method != "zero_shot" and head_init != "class_text":
        clip.pop("class_prompt")
    uses_lmm = method in USES_LMM or head_init == "centroids"
    base = {"dataset": dataset, "data": data_digest, "source": to_dict(params.source(dataset)),
            "clip": clip, "method": method, "train": train if method in TRAINED else None,
            "describe": [setting_hash(params.describe), params.describe.on_too_few, params.describe.too_few_retries]
            if uses_lmm else None}
    if method == "zero_shot_lmm":  # its classifier is the centroids, which few-shot draws per seed
        point = study_point(params)
        base["shots"] = [point["shots"], point["centroids_from"]]
    alpha = method_alpha(method, params.alpha)
    return {"config_id": stable_hash({**base, "alpha": alpha}), "ablation_id": stable_hash(base),
            "alpha": "none" if alpha is None else repr(alpha)}
