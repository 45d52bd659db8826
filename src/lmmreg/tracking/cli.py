"""`python -m lmmreg.tracking init`: create the store before parallel runs (make repro does this).
`python -m lmmreg.tracking link`: print the address that opens the runs table (make repro ends with it)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from lmmreg.tracking.store import EXPERIMENT, init_store, project_root, tracking_uri
from lmmreg.tracking.view import set_view_state


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
