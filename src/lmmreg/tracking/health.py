"""Can the stages log to the tracking store? Answered in seconds, for `python -m lmmreg doctor`.

A SQLite store: the file is an MLflow store and writable (its write lock taken and released), or not created yet
in a writable folder. A server: it answers (`store.check_reachable`, the stages' own probe), its REST API finds
the experiment, and a harmless write (an experiment tag) is accepted. A file store: the folder is writable.
Talks to the store directly (SQLite, REST with short timeouts): MlflowClient would retry for minutes.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from lmmreg.errors import StoreError
from lmmreg.preflight import MISSING, OK, WARN, Verdict
from lmmreg.tracking.store import EXPERIMENT, PROBE_TIMEOUT_S, check_reachable, tracking_uri

SERVER_TIMEOUT_S = 20.0  # an answer may be slow; connecting is PROBE_TIMEOUT_S
INIT = "`python -m lmmreg.tracking init`"


def check_store(uri: str | None = None) -> Verdict:
    """(status, detail, fix) of the store at `uri` (default: the one this checkout logs to)."""
    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///"):
        return _check_sqlite(uri, Path(uri.removeprefix("sqlite:///")))
    if uri.startswith(("http://", "https://")):
        return _check_server(uri)
    if uri.startswith("file:") or "://" not in uri:
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
        ok = os.access(path if path.exists() else path.parent, os.W_OK)
        return (OK if ok else MISSING), f"{uri}" + ("" if ok else " is not writable"), ""
    return WARN, f"{uri}: not checked (scheme not known to the doctor)", ""


def _check_sqlite(uri: str, db: Path) -> Verdict:
    if not db.exists():
        writable = os.access(db.parent, os.W_OK)
        return ((OK if writable else MISSING), f"{db} not created yet (`make repro` creates it)",
                "" if writable else f"{db.parent} is not writable")
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
            con.execute("begin immediate")  # takes the write lock: fails on a read-only file or folder
            con.rollback()
        finally:
            con.close()
    except sqlite3.Error as e:
        return MISSING, f"{db}: {e}", f"check the file's permissions, or move it away and {INIT}"
    if "experiments" not in tables:
        return MISSING, f"{db} is not an MLflow store", INIT
    return OK, f"{uri} (writable)", ""


def _check_server(uri: str) -> Verdict:
    import httpx

    try:
        check_reachable(uri, timeout_s=PROBE_TIMEOUT_S)
    except StoreError as e:
        return MISSING, str(e), ("start it (`mlflow server --host 0.0.0.0 --port 5000`, docs/team.md) or fix "
                                 "MLFLOW_TRACKING_URI / .mlflow-uri")
    base = uri.rstrip("/")
    timeout = httpx.Timeout(SERVER_TIMEOUT_S, connect=PROBE_TIMEOUT_S)
    try:
        got = httpx.get(f"{base}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": EXPERIMENT},
                        timeout=timeout)
        if got.status_code == 404:
            return OK, f"{uri} answers; experiment {EXPERIMENT!r} not created yet", f"{INIT} creates it"
        if got.status_code != 200:
            return MISSING, f"{uri}: answers, but its MLflow API returned HTTP {got.status_code}", \
                "is this an MLflow server? check the URI and credentials"
        put = httpx.post(f"{base}/api/2.0/mlflow/experiments/set-experiment-tag", timeout=timeout,
                         json={"experiment_id": got.json()["experiment"]["experiment_id"], "key": "lmmreg.doctor",
                               "value": time.strftime("%FT%T")})
    except httpx.HTTPError as e:
        return MISSING, f"{uri}: {type(e).__name__}: {e}", "check the server's log"
    if put.status_code != 200:
        return MISSING, f"{uri}: reads work, a write was refused (HTTP {put.status_code})", \
            "check the server's permissions"
    return OK, f"{uri} (read and write)", ""
