"""Writing runs: a dataset's parent run (stage summarize) and the live (method, seed) runs of a train stage."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Self

from lmmreg.tracking.copies import new_record
from lmmreg.tracking.models import quiet_model_logging
from lmmreg.tracking.names import flatten_params
from lmmreg.tracking.owners import Interrupted, SignalScope, _process_start_ms, end_stale_runs, process_identity
from lmmreg.tracking.store import TAG, _client, context_tags, init_store, write_stamp

log = logging.getLogger(__name__)


def _log_params(client, run_id: str, params: dict[str, Any]) -> None:
    """Nested params under their dotted names, in the batches MLflow accepts (100 params a call)."""
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in sorted(flatten_params(params).items())]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def _log_metrics(client, run_id: str, history: list[dict], final: dict[str, float], *, step: str) -> None:
    """One metric per key of each history row at that row's `step`, then the final metrics at step 0."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, int(row[step])) for row in history for k, v in row.items() if k != step]
    metrics += [Metric(k, float(v), now, 0) for k, v in final.items()]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])


class _DatasetRuns:
    """What the parent and the live runs share: the store, the owner process, the stale runs of the dataset ended
    first, and a context manager whose exit ends the open runs FINISHED, FAILED (an exception) or KILLED (SIGTERM,
    SIGINT): the subclass's `close(status, *, reason)`."""

    def __init__(self, dataset: str):
        self.client = _client()
        self.experiment_id = init_store()
        self.dataset = dataset
        self.owner = process_identity()
        end_stale_runs(dataset, before_ms=_process_start_ms())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        elif isinstance(exc, (Interrupted, KeyboardInterrupt)):
            self.close("KILLED", reason=getattr(exc, "reason", "received SIGINT (KeyboardInterrupt)"))
        else:
            self.close("FAILED", reason=f"{type(exc).__name__}: {exc}"[:500])


class RunLogger(_DatasetRuns):
    """The parent run of a dataset's summarize stage: every method's mean accuracy, the runs it adopts, the model.

    Use as a context manager: leaving normally ends the parent FINISHED, an exception FAILED, SIGTERM/SIGINT
    (:class:`Interrupted`) or Ctrl-C KILLED with a `lmmreg.killed_reason` tag. Opening one first ends the
    runs of the same dataset that a killed process left RUNNING.
    """

    def __init__(self, *, dataset: str, params: dict[str, Any], tags: dict[str, str], run_name: str | None = None):
        super().__init__(dataset)
        all_tags = {**context_tags(), **tags, f"{TAG}dataset": dataset, f"{TAG}kind": "parent",
                    f"{TAG}process": self.owner}
        self.parent = self.client.create_run(self.experiment_id, run_name=run_name or dataset, tags=all_tags)
        self._open = {self.parent_id}
        self.closed = False
        _log_params(self.client, self.parent_id, params)
        self._signals = SignalScope()

    @property
    def parent_id(self) -> str:
        return self.parent.info.run_id

    def tag(self, tags: dict[str, str]) -> None:
        """Tags of the parent run."""
        for k, v in tags.items():
            self.client.set_tag(self.parent_id, k, v)

    def log_summary(self, metrics: dict[str, float]) -> None:
        """Metrics of the parent run (the mean test accuracy per method), shown beside the experiment's params."""
        _log_metrics(self.client, self.parent_id, [], metrics, step="epoch")

    def adopt(self, runs: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
        """Make this parent the parent of the runs that have none yet (those the train stages of this invocation
        opened, and copies `resolve_runs` made for this store) and tag the runs this invocation did not train
        (`lmmreg.reused_runs`: an earlier invocation's, or copies of another store's). `runs` is what
        `resolve_runs` returned. Returns (new, reused): the ids, in this store, of the runs trained by this
        invocation and of the others."""
        new, reused, copied = [], [], []
        for info in runs.values():
            run_id, parent = info["run_id"], info["parent"]
            if not parent or parent == self.parent_id:
                self.client.set_tag(run_id, "mlflow.parentRunId", self.parent_id)
            (reused if info["copied"] or (parent and parent != self.parent_id) else new).append(run_id)
            if info["copied"]:
                copied.append(run_id)
        self.client.set_tag(self.parent_id, f"{TAG}reused_runs", json.dumps(reused)[:7900])
        self.client.set_tag(self.parent_id, f"{TAG}n_reused_runs", str(len(reused)))
        self.client.set_tag(self.parent_id, f"{TAG}n_new_runs", str(len(new)))
        self.client.set_tag(self.parent_id, f"{TAG}n_copied_runs", str(len(copied)))
        return new, reused

    def log_model(self, *, python_model: Any, artifacts: dict[str, str], input_example: Any,
                  pip_requirements: list[str], registered_name: str, score: float,
                  tags: dict[str, str]) -> dict[str, Any]:
        """Log a pyfunc model on the parent run and register it as `registered_name`.

        The alias `champion` moves to the new version when its `score` (the mean test accuracy, tag `lmmreg.score`)
        is at least the current champion's, so `@champion` is the best so far (`models:/<name>/latest` is the newest).
        Requirements are given, not inferred (inferring loads the model in a subprocess, slowly: docs/tracking.md; and
        may look packages up); the signature comes from `python_model.predict`'s type hints and the input example.
        """
        import mlflow

        with mlflow.start_run(run_id=self.parent_id), quiet_model_logging():  # resumes the open parent
            info = mlflow.pyfunc.log_model(name="classifier", python_model=python_model, artifacts=artifacts,
                                           input_example=input_example, pip_requirements=pip_requirements,
                                           registered_model_name=registered_name, tags=tags)
        self.client.update_run(self.parent_id, status="RUNNING")  # start_run's exit ended it; close() does that
        version = str(info.registered_model_version)
        for k, v in {**tags, f"{TAG}score": repr(float(score))}.items():
            self.client.set_model_version_tag(registered_name, version, k, v)
        current = champion(registered_name)
        is_champion = current is None or float(score) >= current["score"]
        if is_champion:
            self.client.set_registered_model_alias(registered_name, "champion", version)
        uri = f"models:/{registered_name}@champion" if is_champion else f"models:/{registered_name}/{version}"
        return {"model_uri": info.model_uri, "registered": uri, "version": version, "champion": is_champion}

    def close(self, status: str = "FINISHED", *, reason: str | None = None) -> None:
        """End the open runs (once: later calls do nothing) and give the signals back."""
        if self.closed:
            return
        self.closed = True
        self._signals.restore()
        for run_id in sorted(self._open):
            if reason and status == "KILLED":
                self.client.set_tag(run_id, f"{TAG}killed_reason", reason)
            elif reason:
                self.client.set_tag(run_id, f"{TAG}failed_reason", reason)
            self.client.set_terminated(run_id, status)
        self._open.clear()


def champion(name: str) -> dict[str, Any] | None:
    """Registered model `name`'s `champion` alias: its version and score (tag `lmmreg.score`), or None."""
    from mlflow.exceptions import MlflowException

    try:
        v = _client().get_model_version_by_alias(name, "champion")
    except MlflowException:  # no such model, or no champion yet
        return None
    return {"version": str(v.version), "score": float(v.tags.get(f"{TAG}score", "-inf")),
            "registered": f"models:/{name}@champion"}


def registered_version(name: str, *, run_id: str) -> dict[str, Any] | None:
    """The version of registered model `name` logged from run `run_id` (tag `lmmreg.run_id`), if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = _client().search_model_versions(f"name = '{name}' and tags.`{TAG}run_id` = '{run_id}'")
    except MlflowException:  # no such model yet
        return None
    if not versions:
        return None
    v = max(versions, key=lambda v: int(v.version))
    return {"registered": f"models:/{name}/{v.version}", "version": str(v.version), "champion": False}


class LiveRuns(_DatasetRuns):
    """The (method, seed) runs of one train stage, live: each is opened when its training starts, gets its
    epochs' metrics as they arrive (written in batches every `flush_s` seconds, each with its own timestamp and
    step), and ends FINISHED, FAILED (tag `lmmreg.failed_reason`) or KILLED (`lmmreg.killed_reason`), so the
    runs table shows true durations and `mlflow ui` sees a run grow during `dvc repro`.

    They start without a parent: stage `summarize` creates the dataset's parent run and adopts them. Opening
    one first ends the RUNNING runs of the dataset that a killed process left behind. Use as a context manager;
    SIGTERM/SIGINT unwind the stage and end the open runs as KILLED.
    """

    def __init__(self, *, dataset: str, flush_s: float | None = None):
        super().__init__(dataset)
        # LMMREG_MLFLOW_FLUSH_S: seconds between metric writes (inf: at the end only; benchmarks compare the two)
        self.flush_s = float(os.environ.get("LMMREG_MLFLOW_FLUSH_S", "2")) if flush_s is None else flush_s
        self.run_ids: dict[Any, str] = {}
        self._open: set[str] = set()
        self._tags: dict[str, dict[str, str]] = {}
        self._pending: dict[str, list] = {}
        self._records: dict[str, dict[str, Any]] = {}  # run id -> what re-creates the run in another store
        self._flushed = time.monotonic()
        self._signals = SignalScope()

    def start(self, key: Any, *, name: str, params: dict[str, Any], tags: dict[str, str],
              start_ms: int | None = None) -> str:
        """Open the run of `key` (RUNNING), with its params and tags."""
        all_tags = {**context_tags(), **tags, f"{TAG}kind": "child", f"{TAG}dataset": self.dataset,
                    f"{TAG}process": self.owner}
        run = self.client.create_run(self.experiment_id, run_name=name, start_time=start_ms, tags=all_tags)
        run_id = run.info.run_id
        self.run_ids[key] = run_id
        self._open.add(run_id)
        self._tags[run_id] = tags
        self._records[run_id] = new_record(run_id, name=name, params=params, tags=all_tags,
                                           start_ms=run.info.start_time)
        _log_params(self.client, run_id, params)
        return run_id

    def log_epoch(self, key: Any, row: dict[str, float], *, time_ms: int | None = None, step: str = "epoch") -> None:
        """Queue one epoch's metrics at that epoch's step and time; written at the next flush."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000) if time_ms is None else time_ms
        metrics = [Metric(k, float(v), now, int(row[step])) for k, v in row.items() if k != step]
        self._pending.setdefault(self.run_ids[key], []).extend(metrics)
        self._records[self.run_ids[key]]["metrics"].extend([m.key, m.value, m.timestamp, m.step] for m in metrics)
        if time.monotonic() - self._flushed >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        for run_id, metrics in self._pending.items():
            for i in range(0, len(metrics), 1000):
                self.client.log_batch(run_id, metrics=metrics[i:i + 1000])
        self._pending.clear()
        self._flushed = time.monotonic()

    def finish(self, key: Any, *, final: dict[str, float], artifacts: dict[str, Any],
               tags: dict[str, str] | None = None, end_ms: int | None = None) -> str:
        """Log the final metrics (step 0), tags and JSON/torch artifacts of `key`'s run and end it FINISHED."""
        import torch

        run_id = self.run_ids[key]
        self.flush()
        now = int(time.time() * 1000)
        _log_metrics(self.client, run_id, [], final, step="epoch")
        for k, v in (tags or {}).items():
            self.client.set_tag(run_id, k, v)
        record = self._records[run_id]
        record["metrics"].extend([k, float(v), now, 0] for k, v in final.items())
        record["tags"].update(tags or {})
        with tempfile.TemporaryDirectory() as tmp:
            for fname, obj in artifacts.items():
                path = Path(tmp) / fname
                if isinstance(obj, Path):  # a file already written: logged under `fname`
                    shutil.copyfile(obj, path)
                    record["files"][fname] = obj.name  # beside the record in the stage's outputs
                elif fname.endswith(".json"):
                    path.write_text(json.dumps(obj))
                    record["json"][fname] = obj
                else:
                    torch.save(obj, path)
                self.client.log_artifact(run_id, str(path))
        record["end_ms"] = end_ms or now
        self.client.set_terminated(run_id, "FINISHED", end_time=record["end_ms"])
        self._open.discard(run_id)
        write_stamp(run_id, self._tags[run_id])
        return run_id

    def record(self, key: Any) -> dict[str, Any]:
        """What re-creates `key`'s finished run in another store (lmmreg.tracking.copies): its name, params, tags,
        metrics with their steps and times, and its artifacts (JSON inline, files by their name beside the
        record). The train stage writes it into its DVC outputs, so a teammate's store can get the run."""
        return self._records[self.run_ids[key]]

    def fail(self, key: Any, reason: str) -> None:
        """End `key`'s run FAILED with the error as a tag (the stage goes on to end the others)."""
        run_id = self.run_ids.get(key)
        if run_id is None or run_id not in self._open:
            return
        self.flush()
        self.client.set_tag(run_id, f"{TAG}failed_reason", reason[:5000])
        self.client.set_terminated(run_id, "FAILED")
        self._open.discard(run_id)

    def close(self, status: str = "FINISHED", *, reason: str | None = None) -> None:
        """Flush and end whatever is still open with `status` (once), and give the signals back."""
        self._signals.restore()
        try:
            self.flush()
        except Exception as e:  # noqa: BLE001 - ending the runs matters more than the last metrics
            log.warning("could not write the last metrics: %s", e)
        for run_id in sorted(self._open):
            if reason:
                self.client.set_tag(run_id, f"{TAG}{'killed' if status == 'KILLED' else 'failed'}_reason", reason)
            self.client.set_terminated(run_id, status)
        self._open.clear()
