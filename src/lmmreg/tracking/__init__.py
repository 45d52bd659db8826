"""The one package that talks to MLflow; everything else in the project hands it plain dicts.

| module   | what |
|----------|------|
| store    | the root, the tracking URI (env, `.mlflow-uri`, else SQLite at the root), the experiment, the stamp |
| names    | params under their dotted `-S` names, run names, the params an experiment changed |
| view     | the runs table's shared view and the link `make repro` prints |
| owners   | who owns a RUNNING run; stale runs of killed processes ended as KILLED; SIGTERM/SIGINT |
| runs     | the live (method, seed) runs of a train stage; the parent run of stage summarize |
| copies   | runs DVC restored that this store lacks: re-logged from the record each train stage writes |
| models   | logging a pyfunc model quietly, its pinned requirements |
| read     | the report's reading: finished child runs by tag, metric histories, JSON artifacts |
| pretrain | the demo CLIP's pretraining run |
| health   | doctor's check: the store answers, is an MLflow store and takes a write (imported by doctor alone) |
| cli      | `python -m lmmreg.tracking init` (the store, before parallel runs) and `link` (the runs table) |

What a run looks like (docs/tracking.md): a child run per (method, seed), named `<dataset> · <method> · seed k ·
α=…`, opened when its training starts and streaming its epochs; a parent run per (dataset, summarize invocation),
named after the DVC experiment (or `repro`) and the params that differ from the committed ones, carrying the mean
test accuracy per method and adopting the runs that invocation trained. Params are logged once, under the dotted
names `params.yaml`, `dvc exp show` and `dvc exp run -S` use (`alpha`, `train.lr`, `clip.model`). The experiment
carries a shared view (`mlflow.sharedViewState.lmmreg`) that opens the runs table with those columns:
`python -m lmmreg.tracking link` prints its address.
"""

from lmmreg.tracking.cli import main
from lmmreg.tracking.copies import record_path, resolve_runs, write_record
from lmmreg.tracking.models import model_requirements, quiet_model_logging
from lmmreg.tracking.names import changed_params, child_run_name, committed_params, flatten_params, parent_run_name
from lmmreg.tracking.owners import Interrupted, end_stale_runs, process_identity
from lmmreg.tracking.pretrain import log_pretrain_run
from lmmreg.tracking.read import load_json_artifact, metric_history, search_child_runs
from lmmreg.tracking.runs import LiveRuns, RunLogger, champion, registered_version
from lmmreg.tracking.store import (
    EXPERIMENT,
    PRETRAIN_EXPERIMENT,
    STAMP,
    SUMMARY_METRIC,
    TAG,
    URI_FILE,
    check_reachable,
    context_tags,
    init_store,
    project_root,
    tracking_uri,
    write_stamp,
)
from lmmreg.tracking.view import UI_ADDRESS, VIEW_KEY, set_view_state, ui_link, view_state

__all__ = [
    "EXPERIMENT", "PRETRAIN_EXPERIMENT", "STAMP", "SUMMARY_METRIC", "TAG", "UI_ADDRESS", "URI_FILE", "VIEW_KEY",
    "Interrupted", "LiveRuns", "RunLogger", "changed_params", "child_run_name", "committed_params", "context_tags",
    "end_stale_runs", "flatten_params", "init_store", "load_json_artifact", "log_pretrain_run", "main",
    "metric_history", "model_requirements", "parent_run_name", "process_identity", "project_root", "champion",
    "quiet_model_logging", "registered_version", "search_child_runs", "set_view_state", "tracking_uri", "ui_link",
    "view_state", "write_stamp", "record_path", "resolve_runs", "write_record", "check_reachable",
]
