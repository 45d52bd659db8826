"""What every MLflow run of a dataset's invocation is logged with: its params, under their params.yaml names, and
the tags the report selects runs by (data digest, describe setting, study id and point)."""

from __future__ import annotations

import json

from lmmreg.config import Params, to_dict
from lmmreg.describe.setting import DESCRIBE_KEYS, setting_hash
from lmmreg.identity import baseline_settings, study_id, study_point


def run_params(params: Params, dataset: str) -> dict:
    """What every run of this invocation is trained with, nested as in params.yaml (logged as `train.lr` ...)."""
    describe = to_dict(params.describe)
    return {"alpha": params.alpha, "seeds": params.seeds, "train": to_dict(params.train), "clip": to_dict(params.clip),
            "describe": {k: describe[k] for k in DESCRIBE_KEYS}, "sources": {dataset: to_dict(params.source(dataset))}}


def dataset_tags(params: Params, dataset: str, digest: str) -> dict[str, str]:
    """Tags every run of a dataset's invocation carries (child runs of the train stages, the summarize parent)."""
    return {"lmmreg.data_digest": digest, "lmmreg.describe_setting": setting_hash(params.describe),
            "lmmreg.study_id": study_id(params, dataset=dataset, data_digest=digest),
            "lmmreg.point": json.dumps(study_point(params), sort_keys=True)}


def child_run_metadata(params: Params, plan: dict, *, dataset: str, method: str,
                       digest: str) -> tuple[dict, dict[str, str], float | None]:
    """(params, tags, α) of a train stage's (method, seed) runs, the seed left out. The identity comes from the
    method's plan; α (the one the method trains with, from its registry entry via the plan) is logged once, as
    a number, and only for the methods that have one."""
    alpha = plan["depends_on"]["alpha"]
    shared = run_params(params, dataset)
    logged = {**{k: v for k, v in shared.items() if k not in ("seeds", "alpha")},
              "train": {k: v for k, v in shared["train"].items() if k != "methods"}, "dataset": dataset,
              "describe_noise": study_point(params)["describe_noise"], "method": method,
              **({} if alpha is None else {"alpha": alpha}), **baseline_settings(params, method)}
    tags = {**dataset_tags(params, dataset, digest), "lmmreg.dataset": dataset, "lmmreg.method": method,
            "lmmreg.config_id": plan["config_id"], "lmmreg.ablation_id": plan["ablation_id"],
            "lmmreg.demo": str(params.source(dataset).layout == "demo")}
    return logged, tags, alpha
