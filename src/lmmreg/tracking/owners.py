"""Who owns a RUNNING run: each run records its process, so the next start ends the runs of a killed one as KILLED;
SIGTERM/SIGINT unwind a stage so that it ends its own runs as KILLED."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from lmmreg.tracking.store import EXPERIMENT, TAG, _client

log = logging.getLogger(__name__)


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


class SignalScope:
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
