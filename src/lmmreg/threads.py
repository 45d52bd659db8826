"""How many cores a stage may use: the machine's cores shared among the DVC experiments running at once.

`dvc queue start -j 2` runs two experiments side by side. Left alone, each stage's torch (and OpenMP, and the
BLAS under scikit-learn) starts one thread per core, and two experiments' threads then spin for the same cores,
each experiment running many times slower than alone. So every stage asks here first
(`lmmreg.cli.run_stage` calls `configure`): its budget is `cores // jobs`, where jobs is

- `LMMREG_JOBS` when set (e.g. `LMMREG_JOBS=2 dvc queue start -j 2`, or on a machine shared with other work);
- else the number of DVC experiments executing on this machine now (`dvc exp exec-run` processes: one per
  queued or `--temp` experiment), at least 1.

`LMMREG_THREADS` overrides the budget outright. The budget never changes a result: the train stage's math is
the same at any thread count (each seed's run is single-threaded or not, the same bits: tests/test_threads.py),
and pretraining fixes its own thread count as a param (`pretrain.threads`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lmmreg.errors import InputError

log = logging.getLogger(__name__)

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def cores() -> int:
    """CPUs this process may run on (the affinity mask, so a container's or taskset's limit counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def running_experiments(proc: Path = Path("/proc")) -> int:
    """DVC experiments executing on this machine now: processes running `dvc exp exec-run`."""
    n = 0
    for d in proc.glob("[0-9]*"):
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"exec-run" in argv and b"exp" in argv:
            n += 1
    return n


def _env_count(name: str, unit: str) -> int | None:
    """A whole number >= 1 from the environment variable `name`, or None when unset (a bad value names it)."""
    env = os.environ.get(name, "").strip()
    if not env:
        return None
    try:
        return max(1, int(env))
    except ValueError:
        raise InputError(f"{name}={env!r}: expected a whole number of {unit}") from None


def jobs() -> int:
    """How many experiments share the cores (LMMREG_JOBS, else the executing DVC experiments, at least 1)."""
    return _env_count("LMMREG_JOBS", "jobs") or max(1, running_experiments())


def budget() -> int:
    """Cores this stage may use: LMMREG_THREADS, else cores // jobs (at least 1)."""
    return _env_count("LMMREG_THREADS", "threads") or max(1, cores() // jobs())


def configure(threads: int | None = None) -> int:
    """Hold this process (torch, OpenMP, BLAS) and the processes it starts to `threads` (default: `budget()`)."""
    n = budget() if threads is None else threads
    for var in ENV_VARS:  # read by libraries that start later and by child processes
        os.environ[var] = str(n)
    os.environ["LMMREG_THREADS"] = str(n)
    import torch

    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)  # the BLAS numpy/scipy/scikit-learn already loaded
    except ImportError:  # pragma: no cover - scikit-learn brings it
        pass
    return n
