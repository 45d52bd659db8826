"""Which configuration a run belongs to: the key the report selects runs by (never by recency alone).

Deliberately light (config and the describe setting hash only): the report stage depends on it without
depending on the training code.
"""

from __future__ import annotations

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


def run_identity(params: Params, *, dataset: str, method: str, data_digest: str) -> dict[str, str]:
    """Which configuration a (dataset, method) run belongs to, independent of seed and recency.

    `config_id` hashes every setting the result depends on (data, CLIP, describe setting where the method
    uses the LMM, training config, alpha where it plays a part); `ablation_id` is the same without alpha,
    so runs that differ only in alpha can be lined up for the alpha ablation.
    """
    train = to_dict(params.train)
    train.pop("methods")
    clip = to_dict(params.clip)
    if method != "zero_shot":
        clip.pop("class_prompt")
    base = {"dataset": dataset, "data": data_digest, "source": to_dict(params.source(dataset)),
            "clip": clip, "method": method, "train": train if method in TRAINED else None,
            "describe": [setting_hash(params.describe), params.describe.on_too_few, params.describe.too_few_retries]
            if method in USES_LMM else None}
    alpha = method_alpha(method, params.alpha)
    return {"config_id": stable_hash({**base, "alpha": alpha}), "ablation_id": stable_hash(base),
            "alpha": "none" if alpha is None else repr(alpha)}
