"""Where runs go: the project root, the tracking URI, the store and its experiment, context tags, the stamp.

Store: `MLFLOW_TRACKING_URI` when set (a tracking server, or any URI), else the URI in the git-ignored file
`<root>/.mlflow-uri` (this machine's choice, e.g. the team's server: read by every stage, queued experiments
included, whatever shell started the queue), else SQLite at the project root, `sqlite:///<root>/mlflow.db`,
where root is `DVC_ROOT` (set by DVC, also inside the temp folders of queued and `--temp` experiments,
which DVC deletes) or the nearest folder holding `dvc.yaml`. Artifacts go to `<root>/mlartifacts`, fixed
when the experiment is created, so `mlflow ui` run from the root finds everything (a server keeps its own).
Every finished run also rewrites `<root>/metrics/last_run.json`, which the report stage depends on: that is
how DVC learns that the store, which it does not track, gained runs (see dvc.yaml, stage report).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from lmmreg.tracking.models import drop_records

# MLflow otherwise resolves its telemetry host at import: nothing here may need the network.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):  # in a log, no bar per artifact download
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

EXPERIMENT = "lmmreg"
TAG = "lmmreg."  # prefix of the project's own tags
SUMMARY_METRIC = "test_acc."  # parent-run metric prefix: mean test accuracy per method (std: test_acc_std.)
PRETRAIN_EXPERIMENT = "pretrain"


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


PROBE_TIMEOUT_S = 3.0
_reachable: set[str] = set()


def check_reachable(uri: str | None = None, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """A tracking server that does not answer is found in seconds, not after MLflow's minutes of retries.

    Only http(s) stores are probed (their `/health`); any HTTP answer counts as reachable (authentication is
    MLflow's business). Raises StoreError naming the store and the fix; nothing has been written yet."""
    import urllib.error
    import urllib.request

    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")) or uri in _reachable:
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        pass  # it answered
    except (OSError, ValueError) as e:
        from lmmreg.errors import StoreError

        reason = getattr(e, "reason", e)
        raise StoreError(f"the MLflow tracking server {_uri_label(uri)} does not answer ({reason}). Start it, or "
                         f"point MLFLOW_TRACKING_URI (or {URI_FILE}) at a store that answers; nothing computed is "
                         f"lost: DVC keeps the finished stages, re-run `dvc repro`") from None
    _reachable.add(uri)


# What MLflow says when it creates a SQLite store's tables; `python -m lmmreg.tracking init` names the store and
# experiment instead.
STORE_NOISE = {"mlflow.store.db.utils": ("Creating initial MLflow database tables", "Updating database tables")}


def init_store(name: str = EXPERIMENT) -> str:
    """Create the store and the experiment `name` once (call before parallel runs); returns the experiment id.

    A file lock serialises the first creation: two queued experiments starting together would otherwise
    both try to create the SQLite schema or the experiment.
    """
    from filelock import FileLock

    root = project_root()
    uri = tracking_uri()
    check_reachable(uri)
    lock = FileLock(str(root / ".mlflow.lock")) if uri.startswith("sqlite:") else None
    with lock if lock is not None else contextlib.nullcontext(), drop_records(STORE_NOISE):
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
