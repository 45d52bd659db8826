"""The demo CLIP's pretraining as one run of its own experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmmreg.tracking.runs import _log_metrics, _log_params
from lmmreg.tracking.store import PRETRAIN_EXPERIMENT, TAG, _client, context_tags, init_store


def log_pretrain_run(*, name: str, params: dict[str, Any], history: list[dict], final: dict[str, float],
                     tags: dict[str, str], artifacts: list[Path]) -> str:
    """The demo CLIP's pretraining as one run of the `pretrain` experiment: params, per-step curves
    (loss, lr, logit scale, images/s), the evaluation of the trained and the random-init model, files."""
    client = _client()
    exp_id = init_store(PRETRAIN_EXPERIMENT)
    run = client.create_run(exp_id, run_name=name, tags={**context_tags(), **tags, f"{TAG}kind": "pretrain"})
    run_id = run.info.run_id
    _log_params(client, run_id, params)
    _log_metrics(client, run_id, history, final, step="step")
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    return run_id
