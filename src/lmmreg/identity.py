"""Which configuration a run belongs to: the key the report selects runs by (never by recency alone).

What a method's result depends on is read from its registry entry (`lmmreg.methods.get_method`): the params
sections it declares, whether it reads LMM-derived inputs (then the describe setting is part of it), whether it
reads the class-prompt embeddings (then `clip.class_prompt` is), and how alpha enters.
"""

from __future__ import annotations

from typing import Any

from lmmreg.config import Params, stable_hash, to_dict
from lmmreg.describe.setting import setting_hash
from lmmreg.methods import get_method


def method_alpha(method: str, alpha: float) -> float | None:
    """The alpha a method's result depends on: None where it plays no part."""
    kind = get_method(method).alpha
    return alpha if kind == "param" else 0.0 if kind == "zero" else None


def _setting(params: Params, dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        node = getattr(node, part)
    return to_dict(node)


def baseline_settings(params: Params, method: str) -> dict[str, Any]:
    """The `baselines.*` sections a method declares, as plain values (part of its identity, logged with its runs)."""
    return {s: _setting(params, s) for s in get_method(method).settings if s.startswith("baselines.")}


def run_identity(params: Params, *, dataset: str, method: str, data_digest: str) -> dict[str, str]:
    """Which configuration a (dataset, method) run belongs to, independent of seed and recency.

    `config_id` hashes every setting the result depends on (data, CLIP, describe setting where the method
    uses the LMM, its declared params sections, alpha where it plays a part); `ablation_id` is the same without
    alpha, so runs that differ only in alpha can be lined up for the alpha ablation.
    """
    spec = get_method(method)
    train = to_dict(params.train)
    train.pop("methods")
    clip = to_dict(params.clip)
    if not spec.uses_class_prompt:
        clip.pop("class_prompt")
    base = {"dataset": dataset, "data": data_digest, "source": to_dict(params.source(dataset)),
            "clip": clip, "method": method, "train": train if "train" in spec.settings else None,
            "describe": [setting_hash(params.describe), params.describe.on_too_few, params.describe.too_few_retries]
            if spec.uses_lmm else None}
    baselines = baseline_settings(params, method)
    if baselines:  # only where declared, so the ids of the paper's own methods stay as they were
        base["baselines"] = baselines
    alpha = method_alpha(method, params.alpha)
    return {"config_id": stable_hash({**base, "alpha": alpha}), "ablation_id": stable_hash(base),
            "alpha": "none" if alpha is None else repr(alpha)}
