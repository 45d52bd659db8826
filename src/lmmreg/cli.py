"""Shared command-line plumbing for the stages: logging, `--params`, and a one-line exit on the user's errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from lmmreg import threads
from lmmreg.config import ConfigError, Params, load_params
from lmmreg.errors import UserError

# Third-party loggers that speak at INFO per request or per file: httpx alone wrote one line per HTTP request (8,786
# lines for the demo's 7,602 images with the openai describer), burying the progress line and the errors. They log
# from WARNING up; LOG_REQUESTS_ENV=1 turns httpx's request lines back on, with the describer's retries one by one.
QUIET_LOGGERS = ("httpx", "httpcore", "urllib3", "botocore", "s3transfer", "filelock", "fsspec")
LOG_REQUESTS_ENV = "LMMREG_LOG_REQUESTS"


def configure_logging() -> None:
    """Timestamped INFO lines on stderr for lmmreg; third-party chatter (QUIET_LOGGERS) only from WARNING up,
    unless `LMMREG_LOG_REQUESTS=1` (for debugging a describer server: docs/describe.md)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    requests = os.environ.get(LOG_REQUESTS_ENV, "").strip().lower() not in ("", "0", "false", "no")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if requests and name == "httpx" else logging.WARNING)
    if requests:
        logging.getLogger("lmmreg.describe").setLevel(logging.DEBUG)  # each retry, with its reason and wait


def stage_parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return p


def add_compute_args(parser: argparse.ArgumentParser, *, gpu_batch: int, cpu_batch: int, workers: int,
                     workers_help: str) -> None:
    """--device, --batch-size, --precision, --workers: how fast a CLIP stage runs, never what it computes
    (so they are flags, not params). `batch_size(args)` resolves the batch-size default for the device."""
    import torch

    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"default: {gpu_batch} on CUDA, {cpu_batch} on CPU")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                        help="auto = bf16 (fp16 without bf16) autocast on CUDA, fp32 on CPU")
    parser.add_argument("--workers", type=int, default=workers, help=workers_help)
    parser.set_defaults(default_batch=(gpu_batch, cpu_batch))


def batch_size(args: argparse.Namespace) -> int:
    gpu, cpu = args.default_batch
    return args.batch_size or (gpu if args.device.startswith("cuda") else cpu)


def run_stage(main: Callable[[argparse.Namespace, Params], None], parser: argparse.ArgumentParser) -> None:
    """Parse args, load and check params, run `main`. The user's errors (lmmreg.errors.UserError, ConfigError, a
    missing input file) end with one clear line, no traceback; anything else is a bug and keeps its traceback."""
    configure_logging()
    args = parser.parse_args()
    try:
        threads.configure()  # this stage's share of the cores (lmmreg.threads): queued experiments share them
        params = load_params(args.params)
        main(args, params)
    except (UserError, ConfigError, FileNotFoundError) as e:
        logging.getLogger("lmmreg").error("%s", e)
        sys.exit(2)
