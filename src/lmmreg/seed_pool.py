"""Speed machinery: a train stage's seeds side by side in single-threaded helper processes.

Off where it cannot help (`workers_for`: one process on a GPU and for the training-free methods, whose seeds take
milliseconds); a seed's numbers are the same bits in any process (tests/test_threads.py runs both paths).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from lmmreg import threads
from lmmreg.config import Params
from lmmreg.methods import get_method
from lmmreg.seed_run import Job, SeedRunner


def now_ms() -> int:
    return int(time.time() * 1000)


def _helper(job: Job, n_threads: int, claim, msgs) -> None:
    """A helper process: claims seeds until none is left, sends its runs' progress and results to the stage."""
    threads.configure(n_threads)
    runner, seed = None, None
    try:
        while (seed := _claim(claim, job.params.seeds)) is not None:
            runner = runner or SeedRunner(job)
            result = runner.run_seed(seed, lambda kind, s, payload: msgs.put((kind, s, now_ms(), payload)))
            msgs.put(("done", seed, now_ms(), result))
    except BaseException:  # noqa: BLE001 - the stage reports it, naming the seed
        msgs.put(("error", seed, now_ms(), traceback.format_exc()))


def _claim(counter, seeds: list[int]) -> int | None:
    """The next unclaimed seed (shared counter), or None when every seed is taken."""
    with counter.get_lock():
        i = counter.value
        if i >= len(seeds):
            return None
        counter.value = i + 1
    return seeds[i]


def workers_for(params: Params, method: str, device: str) -> int:
    """Processes to run the seeds in, one thread each; one on a GPU and for the training-free methods (their seeds
    take milliseconds).

    With B cores and S seeds: min(S, B) processes, except where B < S < 2B: then all S at once, so the cores
    time-slice S single-threaded processes and finish together after S/B seed-times, where B processes take two
    rounds and leave cores idle in the second (3 seeds on 2 cores: 1.5 seed-times instead of 2). A seed's numbers
    are the same in any process (tests/test_threads.py)."""
    if device != "cpu" or not get_method(method).trains:
        return 1
    cores, seeds = threads.budget(), len(params.seeds)
    return seeds if cores < seeds < 2 * cores else max(1, min(cores, seeds))


# What a helper process costs before its first seed: importing torch, open_clip and MLflow and loading the inputs
# (reports/bench_repro.md: helpers only for seeds longer than their start-up). A method whose seed takes less runs
# all its seeds here.
HELPER_START_S = 8.0


def _helper_context(method: str, need_clip: bool):
    """Where helpers come from: multiprocessing's fork server (started with the first helper), else spawn.

    The server imports this module (and with it the seed runner, the inputs and CLIP's build), the tracking
    package, the method's own module, scikit-learn (every trained seed's convergence check) and, for a method
    that runs CLIP's text tower, open_clip (slow to import on its own: not for the methods that never build
    CLIP)."""
    if "forkserver" not in mp.get_all_start_methods():  # not on Windows
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["lmmreg.seed_pool", "lmmreg.tracking", get_method(method).module_name,
                                "sklearn.linear_model", *(["open_clip"] if need_clip else [])])
    return ctx


def run_parallel(job: Job, runner: SeedRunner, n_workers: int, handle: Callable[[str, int, int, Any], None]) -> int:
    """Seeds in this process and in helper processes; returns how many helpers it started.

    The first seed starts here. If it is still running after as long as a helper takes to start
    (HELPER_START_S), up to `n_workers - 1` helpers are started beside it, each single-threaded or
    `budget // n_workers` threads; this process and they claim the remaining seeds in order from a shared
    counter, and this process relays the helpers' messages between its own epochs. A method whose seeds are
    quicker than that runs them all here.

    Helpers are forked from multiprocessing's fork server (`_helper_context`: it imports what a helper needs once,
    when the first helper starts, and never runs torch): the second helper costs a fork, where a spawned one
    imports everything again (HELPER_START_S), and a fork of this process after torch's threads started can
    hang."""
    ctx = _helper_context(job.method, runner.need_clip)
    cores = threads.budget()
    n_threads = max(1, cores // n_workers)
    threads.configure(n_threads)  # from here on, budget() says n_threads
    claim, msgs = ctx.Value("i", 0), ctx.Queue()
    seeds = job.params.seeds
    done: set[int] = set()
    helpers: list = []

    def drain(block: bool) -> None:
        import queue

        while True:
            try:
                kind, seed, t_ms, payload = msgs.get(timeout=0.5) if block else msgs.get_nowait()
            except queue.Empty:
                return
            handle(kind, seed, t_ms, payload)
            if kind == "done":
                done.add(seed)
            block = False

    def own(kind: str, s: int, payload: Any) -> None:
        handle(kind, s, now_ms(), payload)
        drain(block=False)

    def spawn() -> None:
        """Runs on a timer thread while the first seed trains: helpers for the seeds nobody has claimed, one per
        spare core; more (up to `n_workers - 1`) only if the first seed still runs once those have started, where
        sharing the cores among all seeds beats a second round (quicker seeds would not repay their start)."""
        left = len(seeds) - claim.value
        per_core = min(n_workers, cores) - 1
        for i in range(min(n_workers - 1, left)):
            if i >= per_core and first_done.is_set():
                break
            h = ctx.Process(target=_helper, args=(job, n_threads, claim, msgs), daemon=True)
            helpers.append(h)
            h.start()  # the first one waits for the fork server's imports

    timer = threading.Timer(HELPER_START_S, spawn)
    first_done = threading.Event()

    try:
        while (seed := _claim(claim, seeds)) is not None:
            if not done:
                timer.start()  # the first seed: helpers only if it outlasts their start-up
            res = runner.run_seed(seed, own)
            if not done:
                first_done.set()  # from here, no more helpers than spare cores (spawn reads it)
                timer.cancel()  # no helpers if none has started; a start under way goes on beside this process
            handle("done", seed, now_ms(), res)
            done.add(seed)
            drain(block=False)
        while len(done) < len(seeds):
            drain(block=True)
            # a helper may still be starting (the fork server's imports): only a spawn that is over can fail us
            if len(done) < len(seeds) and not timer.is_alive() and not any(h.is_alive() for h in helpers):
                drain(block=False)
                if len(done) < len(seeds):
                    missing = sorted(set(seeds) - done)
                    raise RuntimeError(f"{job.dataset} {job.method}: the helper processes ended without the "
                                       f"results of seeds {missing} (exit codes {[h.exitcode for h in helpers]})")
    finally:
        timer.cancel()
        if timer.is_alive():  # a start under way (only where every seed ended before the fork server was ready):
            timer.join()  # its helper is stopped below, not left to start once the shared counter is gone
        for h in helpers:
            if h.pid is None:  # never started (its start failed): nothing to stop, and the error above stands
                continue
            if h.is_alive():
                h.terminate()
            h.join(timeout=5)
    return len(helpers)
