"""The runs table a new user opens: the experiment's shared view and the link to it."""

from __future__ import annotations

import json

from lmmreg.tracking.store import SUMMARY_METRIC, _client, init_store, tracking_uri

VIEW_KEY = "lmmreg"  # the experiment's shared runs-table view: tag mlflow.sharedViewState.<VIEW_KEY>
UI_ADDRESS = "http://127.0.0.1:5000"  # where plain `mlflow ui` listens


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
