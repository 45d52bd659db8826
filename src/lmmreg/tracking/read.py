"""Reading runs back (the report): finished child runs by tag, a metric's history, a JSON artifact."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from lmmreg.tracking.store import EXPERIMENT, TAG, _client


def search_child_runs(tag_filters: dict[str, str]) -> list[dict]:
    """Finished child runs whose tags match, newest first, as plain dicts (params, tags, metrics)."""
    client = _client()
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    clauses = [f"tags.`{k}` = '{v}'" for k, v in tag_filters.items()]
    clauses += [f"tags.`{TAG}kind` = 'child'", "attributes.status = 'FINISHED'"]
    runs = client.search_runs([exp.experiment_id], filter_string=" and ".join(clauses),
                              order_by=["attributes.start_time DESC"], max_results=50000)
    return [{"run_id": r.info.run_id, "start_time": r.info.start_time, "params": dict(r.data.params),
             "tags": dict(r.data.tags), "metrics": dict(r.data.metrics)} for r in runs]


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    client = _client()
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def load_json_artifact(run_id: str, name: str) -> Any:
    import mlflow

    _client()
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, dst_path=tmp)
        return json.loads(Path(path).read_text())
