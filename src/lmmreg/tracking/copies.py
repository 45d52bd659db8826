"""Runs that DVC restored but the current store never saw: a teammate's first experiment after `git clone` and
`dvc pull`, a new tracking server, an emptied local store.

Incremental training reuses an unchanged method's results, which DVC restores from its cache or remote, run ids
included. Those ids exist only in the store that trained them. So every train stage writes, beside its results,
a *run record* per seed (`s<seed>.run.json`): the run's name, params, tags, metrics with their steps and times,
and its artifacts (JSON inline, files by name beside the record). Stage `summarize` calls :func:`resolve_runs`
before it opens the parent run: a run the store holds is used as it is; one it lacks is re-logged from its
record (once: a later invocation finds the copy by its `lmmreg.origin_run_id` tag). The copy is tagged with
where it came from (`lmmreg.origin_run_id`, `lmmreg.origin_store`).

Why re-log rather than copy from the origin store: the record travels with the results DVC already versions, so
it works offline, without the origin's credentials, and after the origin is gone; the copy holds everything the
report and the runs table read (params, per-epoch and final metrics, predictions, the head).

Anything else that does not add up (a run deleted in the UI, a record missing) raises :class:`StoreError`, one
line naming the run, the store and the fix, before anything is written.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from lmmreg.errors import StoreError
from lmmreg.tracking.store import TAG, _client, _uri_label, init_store, tracking_uri

log = logging.getLogger(__name__)

RECORD_VERSION = 1
ORIGIN_RUN = f"{TAG}origin_run_id"
ORIGIN_STORE = f"{TAG}origin_store"


def new_record(run_id: str, *, name: str, params: dict[str, Any], tags: dict[str, str], start_ms: int) -> dict:
    """The record of a run that has just been opened in the current store (LiveRuns fills in the rest)."""
    return {"version": RECORD_VERSION, "run_id": run_id, "store": _uri_label(tracking_uri()), "name": name,
            "params": params, "tags": dict(tags), "start_ms": start_ms, "end_ms": None, "metrics": [],
            "json": {}, "files": {}}


def record_path(folder: Path, seed: int) -> Path:
    return folder / f"s{seed}.run.json"


def write_record(record: dict, path: Path) -> None:
    path.write_text(json.dumps(record, separators=(",", ":")) + "\n")


def _not_found(e: Exception) -> bool:
    return getattr(e, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def resolve_runs(records: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """For each run id (-> the path of its record), the run to use in the current store.

    Returns {run id: {"run_id": the id in this store, "parent": its parent run id or None, "copied": bool}}.
    A run the store holds maps to itself; one it lacks to its copy, made from the record if there is none yet.
    Every run is checked, and every record it needs read, before the first copy is written.
    """
    from mlflow.exceptions import MlflowException

    client = _client()
    experiment_id = init_store()
    out: dict[str, dict[str, Any]] = {}
    to_copy: dict[str, tuple[dict, Path]] = {}
    for run_id, path in records.items():
        try:
            run = client.get_run(run_id)
        except MlflowException as e:
            if not _not_found(e):
                raise StoreError(f"{_uri_label(tracking_uri())}: could not read run {run_id} ({e.message}); "
                                 f"check the store, then re-run `dvc repro`") from e
            found = client.search_runs([experiment_id], filter_string=f"tags.`{ORIGIN_RUN}` = '{run_id}'",
                                       max_results=1)
            if found:  # copied by an earlier invocation
                out[run_id] = {"run_id": found[0].info.run_id,
                               "parent": found[0].data.tags.get("mlflow.parentRunId"), "copied": True}
            else:
                to_copy[run_id] = (_read_record(run_id, path), path)
            continue
        if run.info.lifecycle_stage == "deleted":
            raise StoreError(
                f"run {run_id} ({run.info.run_name}) was deleted from the store {_uri_label(tracking_uri())}, "
                f"but DVC's results ({path.parent}) still name it. Restore it (`mlflow runs restore --run-id "
                f"{run_id}`, or in the UI), or re-train its method (`dvc repro -f <its train stage>`); nothing "
                f"was written")
        out[run_id] = {"run_id": run_id, "parent": run.data.tags.get("mlflow.parentRunId"), "copied": False}
    for run_id, (record, path) in to_copy.items():
        new_id = relog(client, record, folder=path.parent, experiment_id=experiment_id)
        log.info("run %s (%s) is not in this store: logged a copy from its DVC-tracked record as run %s",
                 run_id, record["name"], new_id)
        out[run_id] = {"run_id": new_id, "parent": None, "copied": True}
    return {run_id: out[run_id] for run_id in records}


def _read_record(run_id: str, path: Path) -> dict:
    """The run record of `run_id`, checked, or a StoreError naming it and the fix."""
    if not path.is_file():
        raise StoreError(
            f"run {run_id} is not in the store {_uri_label(tracking_uri())} and its record {path} is missing "
            f"(results written by an older version of the code). Re-train that method (`dvc repro -f <its train "
            f"stage>`), or point MLFLOW_TRACKING_URI at the store that trained it")
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: unreadable run record ({e}); re-train that method") from e
    if record.get("version") != RECORD_VERSION or record.get("run_id") != run_id:
        raise StoreError(f"{path}: a run record of version {record.get('version')} for run {record.get('run_id')}, "
                         f"expected version {RECORD_VERSION} for run {run_id}; re-train that method")
    return record


def relog(client, record: dict, *, folder: Path, experiment_id: str) -> str:
    """Create a FINISHED run from `record` in experiment `experiment_id` of the current store; returns its id."""
    from mlflow.entities import Metric

    from lmmreg.tracking.runs import _log_params

    tags = {**record["tags"], ORIGIN_RUN: record["run_id"], ORIGIN_STORE: record["store"]}
    run = client.create_run(experiment_id, run_name=record["name"], start_time=record["start_ms"], tags=tags)
    run_id = run.info.run_id
    try:
        _log_params(client, run_id, record["params"])
        metrics = [Metric(k, float(v), int(t), int(s)) for k, v, t, s in record["metrics"]]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        with tempfile.TemporaryDirectory() as tmp:
            for fname, obj in record["json"].items():
                (Path(tmp) / fname).write_text(json.dumps(obj))
                client.log_artifact(run_id, str(Path(tmp) / fname))
            for fname, stored in record["files"].items():
                src = folder / stored
                if not src.is_file():
                    raise StoreError(f"{src}: run {record['run_id']}'s artifact {fname} is missing from DVC's results "
                                     f"(`dvc pull` or `dvc checkout` restores it)")
                (Path(tmp) / fname).write_bytes(src.read_bytes())
                client.log_artifact(run_id, str(Path(tmp) / fname))
    except BaseException:
        client.set_terminated(run_id, "FAILED")  # a half copy is not found again: the next invocation re-copies
        client.delete_run(run_id)
        raise
    client.set_terminated(run_id, "FINISHED", end_time=record["end_ms"])
    return run_id
