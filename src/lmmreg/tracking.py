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

What a run looks like (docs/tracking.md): a parent run per (dataset, train invocation), named after the DVC
experiment (or `repro`) and the params that differ from the committed ones, carrying the mean test accuracy
per method; a child run per (method, seed), named `<dataset> · <method> · seed k · α=…`. Params are logged
once, under the dotted names `params.yaml`, `dvc exp show` and `dvc exp run -S` use (`alpha`, `train.lr`,
`clip.model`). The experiment carries a shared view (`mlflow.sharedViewState.lmmreg`) that opens the runs
table with those columns: `python -m lmmreg.tracking link` prints its address.

Runs a killed process left RUNNING are ended as KILLED by the next train of the same dataset; SIGTERM and
SIGINT end the open runs as KILLED before the process exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# MLflow otherwise resolves its telemetry host at import: nothing here may need the network.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):  # in a log, no bar per artifact download
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

EXPERIMENT = "lmmreg"
TAG = "lmmreg."  # prefix of the project's own tags
VIEW_KEY = "lmmreg"  # the experiment's shared runs-table view: tag mlflow.sharedViewState.<VIEW_KEY>
UI_ADDRESS = "http://127.0.0.1:5000"  # where plain `mlflow ui` listens
SUMMARY_METRIC = "test_acc."  # parent-run metric prefix: mean test accuracy per method (std: test_acc_std.)


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


def init_store(name: str = EXPERIMENT) -> str:
    """Create the store and the experiment `name` once (call before parallel runs); returns the experiment id.

    A file lock serialises the first creation: two queued experiments starting together would otherwise
    both try to create the SQLite schema or the experiment.
    """
    from filelock import FileLock

    root = project_root()
    uri = tracking_uri()
    lock = FileLock(str(root / ".mlflow.lock")) if uri.startswith("sqlite:") else None
    with lock if lock is not None else contextlib.nullcontext():
        client = _client()
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
            location = (root / "mlartifacts").as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:  # a server: another machine's run created it meanwhile (no lock spans machines)
            exp = client.get_experiment_by_name(name)
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


def flatten_params(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested params as MLflow params under dotted names (`train.lr`), lists and dicts as JSON."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten_params(v, f"{key}."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return out


# ---------------------------------------------------------------------------------------- run names

def child_run_name(dataset: str, method: str, seed: int, alpha: float | None) -> str:
    """`demo · lmm_reg · seed 0 · α=0.01`; α only for the methods it plays a part in (None elsewhere)."""
    name = f"{dataset} · {method} · seed {seed}"
    return name if alpha is None else f"{name} · α={alpha:g}"


def committed_params(rev: str | None = None, *, root: Path | None = None) -> dict | None:
    """`params.yaml` as committed at `rev` (default: DVC's experiment baseline, else HEAD); None if unknown."""
    import yaml

    root = root or project_root()
    rev = rev or os.environ.get("DVC_EXP_BASELINE_REV") or "HEAD"
    try:
        text = subprocess.run(["git", "show", f"{rev}:./params.yaml"], cwd=root, capture_output=True, text=True,
                              check=True, timeout=30).stdout
        return yaml.safe_load(text)
    except (OSError, subprocess.SubprocessError, yaml.YAMLError):
        return None


def changed_params(current: dict, baseline: dict | None) -> dict[str, str]:
    """Dotted params whose value differs from the baseline's; keys the baseline lacks (defaults, or a key added
    since) are not counted, so only what someone set shows."""
    if baseline is None:
        return {}
    base = flatten_params(baseline)
    return {k: v for k, v in flatten_params(current).items() if k in base and base[k] != v}


def parent_run_name(dataset: str, changes: dict[str, str], *, limit: int = 3) -> str:
    """`<DVC experiment name or repro> · <dataset>[ · alpha=0.1, train.lr=0.001 +2]`."""
    name = f"{os.environ.get('DVC_EXP_NAME') or 'repro'} · {dataset}"
    if not changes:
        return name
    shown = [f"{k}={v if len(v) <= 24 else v[:21] + '...'}" for k, v in sorted(changes.items())[:limit]]
    more = f" +{len(changes) - limit}" if len(changes) > limit else ""
    return f"{name} · {', '.join(shown)}{more}"


# ------------------------------------------------------------------------------------- the runs table

def view_state(methods: list[str]) -> dict:
    """The runs table a new user should see: the experiment's knobs and results as columns.

    The shape MLflow's UI (3.x) reads from an experiment tag `mlflow.sharedViewState.<key>` when the page is
    opened with `?viewStateShareKey=<key>`: search facets (`orderByKey`, `orderByAsc`) and UI state
    (`selectedColumns`, keys written `params.\\`name\\``, `metrics.\\`name\\``). Parent rows show the mean test
    accuracy of baseline and proposed (every method's is on the run), child rows their own accuracy.
    """
    params = [f"params.`{p}`" for p in ("alpha", "train.lr", "train.shots", "method", "seed")]
    compared = [m for m in methods if m in ("finetune", "lmm_reg")] or methods  # Table 1 when it is run
    metrics = [f"metrics.`{m}`" for m in ("reported_test_acc", *(f"{SUMMARY_METRIC}{m}" for m in compared))]
    order = f"{SUMMARY_METRIC}lmm_reg" if "lmm_reg" in methods else "reported_test_acc"
    return {"selectedColumns": ["attributes.`Models`", *params, *metrics],
            "orderByKey": f"metrics.`{order}`", "orderByAsc": False, "searchFilter": "", "runListHidden": False}


def ui_link(experiment_id: str) -> str:
    """The address that opens the experiment's runs table with the shared view (`mlflow ui` unless the
    tracking URI is a server, which serves the same UI)."""
    uri = tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI_ADDRESS
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def set_view_state(methods: list[str]) -> str:
    """Store the shared view on the experiment; returns the link that opens it."""
    client = _client()
    exp_id = init_store()
    client.set_experiment_tag(exp_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(view_state(methods)))
    return ui_link(exp_id)


# --------------------------------------------------------------------------- who owns a RUNNING run

def _proc_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux); "" where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]  # field 22 counted from the pid
    except (OSError, IndexError):
        return ""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_identity(pid: int | None = None) -> str:
    """`host:boot:pid:start`, unique to one process even when pids are reused."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{_boot_id()}:{pid}:{_proc_start(pid)}"


def _owner_alive(owner: str) -> bool | None:
    """True/False for a process of this machine; None where it cannot be told (another host)."""
    try:
        host, boot, pid, start = owner.rsplit(":", 3)
    except ValueError:
        return False  # no usable owner: nothing vouches for the run
    if host != socket.gethostname():
        return None
    if boot != _boot_id():
        return False  # the machine rebooted since
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start == _proc_start(int(pid))  # a reused pid is another process


def end_stale_runs(dataset: str, *, before_ms: int) -> list[str]:
    """End as KILLED the RUNNING runs (parents and children) of `dataset` whose process is gone (a run with
    no owner tag: if it started before `before_ms`); a live process's runs (a queued experiment running
    beside this one) and other hosts' runs are left alone."""
    client = _client()
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{TAG}dataset` = '{dataset}' and "
                              "attributes.status = 'RUNNING'", max_results=50000)
    ended = []
    for r in runs:
        owner = r.data.tags.get(f"{TAG}process", "")
        alive = _owner_alive(owner) if owner else (False if r.info.start_time < before_ms else True)
        if alive:
            continue
        if alive is None:
            log.warning("run %s of %s is RUNNING on another host (%s): left alone", r.info.run_id, dataset, owner)
            continue
        why = (f"process {owner or '(unknown)'} ended without closing the run (killed?); "
               f"ended by process {process_identity()} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}")
        client.set_tag(r.info.run_id, f"{TAG}killed_reason", why)
        client.set_terminated(r.info.run_id, "KILLED")
        ended.append(r.info.run_id)
    if ended:
        log.warning("ended %d stale RUNNING run(s) of %s as KILLED: %s", len(ended), dataset, ", ".join(ended))
    return ended


def model_requirements() -> list[str]:
    """Pinned pip requirements of a logged model, from the installed versions (never inferred: see log_model)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("mlflow", "torch", "torchvision", "open_clip_torch", "numpy", "pillow", "pyyaml"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    return reqs


class Interrupted(SystemExit):
    """SIGTERM / SIGINT while runs are open: unwinds the stage, which ends its runs as KILLED, then exits
    with 128 + signal like a process killed by it."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.reason = f"received {signal.Signals(signum).name}"


def _process_start_ms() -> int:
    start = _proc_start(os.getpid())
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return int((time.time() - uptime + int(start) / os.sysconf("SC_CLK_TCK")) * 1000)
    except (OSError, ValueError):
        return int(time.time() * 1000)


# ------------------------------------------------------------------------------------------ logging

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


class RunLogger:
    """Parent run per (dataset, train invocation); a child run per (method, seed).

    Use as a context manager: leaving normally ends the parent FINISHED, an exception FAILED, SIGTERM/SIGINT
    (:class:`Interrupted`) or Ctrl-C KILLED with a `lmmreg.killed_reason` tag. Opening one first ends the
    runs of the same dataset that a killed process left RUNNING.
    """

    def __init__(self, *, dataset: str, params: dict[str, Any], tags: dict[str, str], run_name: str | None = None):
        self.client = _client()
        self.experiment_id = init_store()
        self.dataset = dataset
        self.owner = process_identity()
        end_stale_runs(dataset, before_ms=_process_start_ms())
        all_tags = {**context_tags(), **tags, f"{TAG}dataset": dataset, f"{TAG}kind": "parent",
                    f"{TAG}process": self.owner}
        self.parent = self.client.create_run(self.experiment_id, run_name=run_name or dataset, tags=all_tags)
        self._open = {self.parent_id}
        self.closed = False
        _log_params(self.client, self.parent_id, params)
        self._old_handlers: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    @staticmethod
    def _on_signal(signum, frame) -> None:
        raise Interrupted(signum)  # unwinds first, so no MLflow call is cut in half; __exit__ ends the runs

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        elif isinstance(exc, (Interrupted, KeyboardInterrupt)):
            self.close("KILLED", reason=getattr(exc, "reason", "received SIGINT (KeyboardInterrupt)"))
        else:
            self.close("FAILED", reason=f"{type(exc).__name__}: {exc}"[:500])

    @property
    def parent_id(self) -> str:
        return self.parent.info.run_id

    def log_summary(self, metrics: dict[str, float]) -> None:
        """Metrics of the parent run (the mean test accuracy per method), shown beside the experiment's params."""
        _log_metrics(self.client, self.parent_id, [], metrics, step="epoch")

    def log_child(self, *, name: str, params: dict[str, Any], tags: dict[str, str], history: list[dict],
                  final: dict[str, float], artifacts: dict[str, Any]) -> str:
        """One finished (method, seed) run: params, per-epoch metrics, final metrics, JSON/torch artifacts."""
        import torch

        run = self.client.create_run(self.experiment_id, run_name=name, tags={
            **context_tags(), **tags, "mlflow.parentRunId": self.parent_id, f"{TAG}kind": "child",
            f"{TAG}dataset": self.dataset, f"{TAG}process": self.owner})
        run_id = run.info.run_id
        self._open.add(run_id)
        _log_params(self.client, run_id, params)
        _log_metrics(self.client, run_id, history, final, step="epoch")
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
        self._open.discard(run_id)
        return run_id

    def adopt(self, run_ids: list[str]) -> tuple[list[str], list[str]]:
        """Make this parent the parent of the runs that have none yet (those the train stages of this invocation
        opened) and tag the others, which an earlier invocation trained and this one reuses unchanged
        (`lmmreg.reused_runs`). Returns (adopted, reused)."""
        adopted, reused = [], []
        for run_id in run_ids:
            run = self.client.get_run(run_id)
            parent = run.data.tags.get("mlflow.parentRunId")
            if parent and parent != self.parent_id:
                reused.append(run_id)
            else:
                self.client.set_tag(run_id, "mlflow.parentRunId", self.parent_id)
                adopted.append(run_id)
        self.client.set_tag(self.parent_id, f"{TAG}reused_runs", json.dumps(reused)[:7900])
        self.client.set_tag(self.parent_id, f"{TAG}n_reused_runs", str(len(reused)))
        self.client.set_tag(self.parent_id, f"{TAG}n_new_runs", str(len(adopted)))
        return adopted, reused

    def log_model(self, *, python_model: Any, artifacts: dict[str, str], input_example: Any,
                  pip_requirements: list[str], registered_name: str, score: float,
                  tags: dict[str, str]) -> dict[str, Any]:
        """Log a pyfunc model on the parent run and register it as `registered_name`.

        The alias `champion` moves to the new version when its `score` (the mean test accuracy, tag `lmmreg.score`)
        is at least the current champion's, so `@champion` is the best so far (`models:/<name>/latest` is the newest).
        Requirements are given, not inferred (inferring loads the model in a subprocess: ~25 s, and may look
        packages up); the signature comes from `python_model.predict`'s type hints and the input example.
        """
        import mlflow
        from mlflow.exceptions import MlflowException

        with mlflow.start_run(run_id=self.parent_id):  # resumes the open parent; the logged model links to it
            info = mlflow.pyfunc.log_model(name="classifier", python_model=python_model, artifacts=artifacts,
                                           input_example=input_example, pip_requirements=pip_requirements,
                                           registered_model_name=registered_name, tags=tags)
        self.client.update_run(self.parent_id, status="RUNNING")  # start_run's exit ended it; close() does that
        version = str(info.registered_model_version)
        for k, v in {**tags, f"{TAG}score": repr(float(score))}.items():
            self.client.set_model_version_tag(registered_name, version, k, v)
        try:
            current = self.client.get_model_version_by_alias(registered_name, "champion")
            best = float(current.tags.get(f"{TAG}score", "-inf"))
        except MlflowException:  # no champion yet
            best = float("-inf")
        champion = float(score) >= best
        if champion:
            self.client.set_registered_model_alias(registered_name, "champion", version)
        uri = f"models:/{registered_name}@champion" if champion else f"models:/{registered_name}/{version}"
        return {"model_uri": info.model_uri, "registered": uri, "version": version, "champion": champion}

    def close(self, status: str = "FINISHED", *, reason: str | None = None) -> None:
        """End the open runs (once: later calls do nothing) and give the signals back."""
        if self.closed:
            return
        self.closed = True
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        for run_id in sorted(self._open):
            if reason and status == "KILLED":
                self.client.set_tag(run_id, f"{TAG}killed_reason", reason)
            elif reason:
                self.client.set_tag(run_id, f"{TAG}failed_reason", reason)
            self.client.set_terminated(run_id, status)
        self._open.clear()


class LiveRuns:
    """The (method, seed) runs of one train stage, live: each is opened when its training starts, gets its
    epochs' metrics as they arrive (written in batches every `flush_s` seconds, each with its own timestamp and
    step), and ends FINISHED, FAILED (tag `lmmreg.failed_reason`) or KILLED (`lmmreg.killed_reason`), so the
    runs table shows true durations and `mlflow ui` sees a run grow during `dvc repro`.

    They start without a parent: stage `summarize` creates the dataset's parent run and adopts them. Opening
    one first ends the RUNNING runs of the dataset that a killed process left behind. Use as a context manager;
    SIGTERM/SIGINT unwind the stage and end the open runs as KILLED.
    """

    def __init__(self, *, dataset: str, flush_s: float = 2.0):
        self.client = _client()
        self.experiment_id = init_store()
        self.dataset = dataset
        self.owner = process_identity()
        self.flush_s = flush_s
        end_stale_runs(dataset, before_ms=_process_start_ms())
        self.run_ids: dict[Any, str] = {}
        self._open: set[str] = set()
        self._tags: dict[str, dict[str, str]] = {}
        self._pending: dict[str, list] = {}
        self._flushed = time.monotonic()
        self._signals = _SignalScope()

    def __enter__(self) -> LiveRuns:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        elif isinstance(exc, (Interrupted, KeyboardInterrupt)):
            self.close("KILLED", reason=getattr(exc, "reason", "received SIGINT (KeyboardInterrupt)"))
        else:
            self.close("FAILED", reason=f"{type(exc).__name__}: {exc}"[:500])

    def start(self, key: Any, *, name: str, params: dict[str, Any], tags: dict[str, str],
              start_ms: int | None = None) -> str:
        """Open the run of `key` (RUNNING), with its params and tags."""
        run = self.client.create_run(self.experiment_id, run_name=name, start_time=start_ms, tags={
            **context_tags(), **tags, f"{TAG}kind": "child", f"{TAG}dataset": self.dataset,
            f"{TAG}process": self.owner})
        run_id = run.info.run_id
        self.run_ids[key] = run_id
        self._open.add(run_id)
        self._tags[run_id] = tags
        _log_params(self.client, run_id, params)
        return run_id

    def log_epoch(self, key: Any, row: dict[str, float], *, time_ms: int | None = None, step: str = "epoch") -> None:
        """Queue one epoch's metrics at that epoch's step and time; written at the next flush."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000) if time_ms is None else time_ms
        self._pending.setdefault(self.run_ids[key], []).extend(
            Metric(k, float(v), now, int(row[step])) for k, v in row.items() if k != step)
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
        with tempfile.TemporaryDirectory() as tmp:
            for fname, obj in artifacts.items():
                path = Path(tmp) / fname
                if isinstance(obj, Path):  # a file already written: logged under `fname`
                    shutil.copyfile(obj, path)
                elif fname.endswith(".json"):
                    path.write_text(json.dumps(obj))
                else:
                    torch.save(obj, path)
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, "FINISHED", end_time=end_ms or now)
        self._open.discard(run_id)
        write_stamp(run_id, self._tags[run_id])
        return run_id

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


class _SignalScope:
    """SIGTERM/SIGINT raise :class:`Interrupted` (in the main thread) until `restore()`."""

    def __init__(self):
        self._old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._raise)

    @staticmethod
    def _raise(signum, frame) -> None:
        raise Interrupted(signum)  # unwinds first, so no MLflow call is cut in half; __exit__ ends the runs

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


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


def _methods_in_params(path: Path) -> list[str]:
    import yaml

    try:
        return list(yaml.safe_load(path.read_text())["train"]["methods"])
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return ["finetune", "lmm_reg"]


def main(argv: list[str] | None = None) -> None:
    """`python -m lmmreg.tracking init`: create the store before parallel runs (make repro does this).
    `python -m lmmreg.tracking link`: print the address that opens the runs table (make repro ends with it)."""
    logging.basicConfig(level=logging.INFO)
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["init"]:
        exp_id = init_store()
        print(f"MLflow store {tracking_uri()} experiment {EXPERIMENT!r} id {exp_id}")
    elif argv == ["link"]:
        link = set_view_state(_methods_in_params(project_root() / "params.yaml"))
        serve = "" if tracking_uri().startswith(("http://", "https://")) else \
            f"  (start the UI first: mlflow ui --backend-store-uri {tracking_uri()})\n"
        print(f"Compare the runs in MLflow:\n  {link}\n{serve}", end="")
    else:
        raise SystemExit("usage: python -m lmmreg.tracking init | link")


if __name__ == "__main__":
    main()
