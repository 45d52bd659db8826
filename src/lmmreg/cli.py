"""Shared command-line plumbing for the stages: logging, `--params`, and a clean exit on bad input."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from lmmreg.config import ConfigError, Params, load_params


def stage_parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return p


def run_stage(main: Callable[[argparse.Namespace, Params], None], parser: argparse.ArgumentParser) -> None:
    """Parse args, load and check params, run `main`; user errors end with one clear line, no traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        main(args, params)
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as e:
        logging.getLogger("lmmreg").error("%s", e)
        sys.exit(2)
