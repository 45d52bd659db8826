"""Reading runs back (the report): finished child runs by tag, a metric's history, a JSON artifact."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from lmmreg.tracking.store import EXPERIMENT, TAG, _client, check_reachable


def search_child_runs(tag_filters: dict[str, str]) -> list[dict]:
    """Finished child runs whose tags match, newest first, as plain dicts (params, tags, metrics)."""
    check_reachable()
    client = _client()
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    clauses = [f"tags.`{k}` = '{v}'" for k, v in tag_filters.items()]
    clauses += [f"tags.`{TAG}kind` = 'child'", "attributes.status = 'FINISHED'"]
    runs = client.search_runs([exp.experiment_id], filter_string=" and ".join(clauses),
                              order_by=["attributes.start_time DESC"], max_results=50000)
    return [{"run_id": r.info.run_id, "start_time": r.info.start_time, "params": dict(r.data.params),
             "tags": dict(r.data.tags), "metrics": dict(r.data.metrics), "artifact_uri": r.info.artifact_uri}
            for r in runs]


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    client = _client()
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def load_json_artifact(run_id: str, name: str, *, artifact_uri: str | None = None) -> Any:
    """A run's JSON artifact. Given the run's `artifact_uri` (search_child_runs has it), a local store's file is
    read in place and a remote one is fetched by that URI; without it MLflow resolves `runs:/` first (two
    lookups of the run and one of its logged models: most of a fetch's time, for every run the report reads)."""
    import mlflow

    _client()
    if artifact_uri is not None:
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        parsed = urlparse(artifact_uri)
        if parsed.scheme in ("", "file"):
            path = Path(url2pathname(parsed.path)) / name
            if path.is_file():
                return json.loads(path.read_text())
        else:
            with tempfile.TemporaryDirectory() as tmp:
                got = mlflow.artifacts.download_artifacts(artifact_uri=f"{artifact_uri.rstrip('/')}/{name}",
                                                          dst_path=tmp)
                return json.loads(Path(got).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, dst_path=tmp)
        return json.loads(Path(path).read_text())
