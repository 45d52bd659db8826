"""The one module that talks to MLflow.

Store: `MLFLOW_TRACKING_URI` when set (a tracking server, or any URI), else the URI in the git-ignored file
`<root>/.mlflow-uri` (this machine's choice, e.g. the team's server: read by every stage, queued experiments
included, whatever shell started the queue), else SQLite at the project root, `sqlite:///<root>/mlflow.db`,
where root is `DVC_ROOT` (set by DVC, also inside the temp folders of queued and `--temp` experiments,
which DVC deletes) or the nearest folder holding `dvc.yaml`. Artifacts go to `<root>/mlartifacts`, fixed
when the experiment is created, so `mlflow ui` run from the root finds everything (a server keeps its own).
Every finished run also rewrites `<root>/metrics/last_run.json`, which the report stage depends on: that is
how DVC learns that the store, which it does not track, gained runs (see dvc.yaml, stage report).
Everything else in the project hands this module plain dicts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPERIMENT = "lmmreg"
TAG = "lmmreg."  # prefix of the project's own tags


def project_root() -> Path:
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "dvc.yaml").is_file():
            return d
    return here


URI_FILE = ".mlflow-uri"  # git-ignored, one line: this machine's tracking URI
STAMP = "metrics/last_run.json"  # a dependency of the report stage in dvc.yaml


def tracking_uri() -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    uri_file = project_root() / URI_FILE
    if uri_file.is_file() and uri_file.read_text().strip():
        return uri_file.read_text().strip()
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def _client():
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def init_store() -> str:
    """Create the store and the experiment once (call before parallel runs); returns the experiment id.

    A file lock serialises the first creation: two queued experiments starting together would otherwise
    both try to create the SQLite schema or the experiment.
    """
    from filelock import FileLock

    root = project_root()
    uri = tracking_uri()
    lock = FileLock(str(root / ".mlflow.lock")) if uri.startswith("sqlite:") else None
    with lock if lock is not None else contextlib.nullcontext():
        client = _client()
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        location = None
        if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
            location = (root / "mlartifacts").as_uri()
        try:
            return client.create_experiment(EXPERIMENT, artifact_location=location)
        except Exception:  # a server: another machine's run created it meanwhile (no lock spans machines)
            exp = client.get_experiment_by_name(EXPERIMENT)
            if exp is None:
                raise
            return exp.experiment_id


def _git_commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def context_tags() -> dict[str, str]:
    """Git commit and DVC experiment tags (present only when DVC runs the stage as an experiment)."""
    tags = {"mlflow.source.git.commit": _git_commit(Path.cwd())}
    for env, tag in (("DVC_EXP_NAME", "dvc.exp_name"), ("DVC_EXP_BASELINE_REV", "dvc.baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return out


class RunLogger:
    """Parent run per (dataset, train invocation); a child run per (method, seed)."""

    def __init__(self, *, dataset: str, params: dict[str, Any], tags: dict[str, str]):
        self.client = _client()
        self.experiment_id = init_store()
        all_tags = {**context_tags(), **tags, f"{TAG}dataset": dataset, f"{TAG}kind": "parent"}
        self.parent = self.client.create_run(self.experiment_id, run_name=f"{dataset}", tags=all_tags)
        self._log_params(self.parent.info.run_id, params)

    @property
    def parent_id(self) -> str:
        return self.parent.info.run_id

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = _flatten(params)
        items = [Param(k, v[:6000]) for k, v in sorted(flat.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_child(self, *, name: str, params: dict[str, Any], tags: dict[str, str], history: list[dict],
                  final: dict[str, float], artifacts: dict[str, Any]) -> str:
        """One finished (method, seed) run: params, per-epoch metrics, final metrics, JSON/torch artifacts."""
        import time

        import torch
        from mlflow.entities import Metric

        run = self.client.create_run(self.experiment_id, run_name=name, tags={
            **context_tags(), **tags, "mlflow.parentRunId": self.parent_id, f"{TAG}kind": "child"})
        run_id = run.info.run_id
        self._log_params(run_id, params)
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(row["epoch"])) for row in history for k, v in row.items()
                   if k != "epoch"]
        metrics += [Metric(k, float(v), now, 0) for k, v in final.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000])
        with tempfile.TemporaryDirectory() as tmp:
            for fname, obj in artifacts.items():
                path = Path(tmp) / fname
                if fname.endswith(".json"):
                    path.write_text(json.dumps(obj))
                else:
                    torch.save(obj, path)
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, "FINISHED")
        write_stamp(run_id, tags)
        return run_id

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_id, status)


def write_stamp(run_id: str, tags: dict[str, str]) -> None:
    """Rewrite `<root>/metrics/last_run.json`: the report stage re-runs when the store gained runs.

    Written into the project root (DVC_ROOT), so a queued or --temp experiment's runs reach the
    workspace's `dvc status` too; committed with dvc.lock, so a fresh clone is up to date."""
    path = project_root() / STAMP
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = {"run_id": run_id, "tracking_uri": _uri_label(tracking_uri()), **context_tags(),
             **{k: v for k, v in tags.items() if k.startswith(TAG)}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".last_run.")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)  # atomic: parallel queued experiments never leave half a file


def _uri_label(uri: str) -> str:
    """The store as the committed stamp names it: no machine-local path, no credentials."""
    from urllib.parse import urlsplit

    if uri.startswith("sqlite:") and uri.endswith("/mlflow.db"):
        return "sqlite (the project's mlflow.db)"
    parts = urlsplit(uri)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl() if parts.netloc else uri


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


PRETRAIN_EXPERIMENT = "pretrain"


def log_pretrain_run(*, name: str, params: dict[str, Any], history: list[dict], final: dict[str, float],
                     tags: dict[str, str], artifacts: list[Path]) -> str:
    """The demo CLIP's pretraining as one run of the `pretrain` experiment: params, per-step curves
    (loss, lr, logit scale, images/s), the evaluation of the trained and the random-init model, files."""
    import time

    from mlflow.entities import Metric

    client = _client()
    exp = client.get_experiment_by_name(PRETRAIN_EXPERIMENT)
    if exp is None:
        uri = tracking_uri()
        location = (project_root() / "mlartifacts").as_uri() if uri.startswith(("sqlite:", "file:")) else None
        exp_id = client.create_experiment(PRETRAIN_EXPERIMENT, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    run = client.create_run(exp_id, run_name=name, tags={**context_tags(), **tags, f"{TAG}kind": "pretrain"})
    run_id = run.info.run_id
    flat = _flatten(params)
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in sorted(flat.items())])
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, int(row["step"])) for row in history for k, v in row.items() if k != "step"]
    metrics += [Metric(k, float(v), now, 0) for k, v in final.items()]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def main() -> None:
    """`python -m lmmreg.tracking init`: create the store before parallel runs (make repro does this)."""
    import sys

    logging.basicConfig(level=logging.INFO)
    if sys.argv[1:] != ["init"]:
        raise SystemExit("usage: python -m lmmreg.tracking init")
    exp_id = init_store()
    print(f"MLflow store {tracking_uri()} experiment {EXPERIMENT!r} id {exp_id}")


if __name__ == "__main__":
    main()
