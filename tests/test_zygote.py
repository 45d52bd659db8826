"""bin/python's warm interpreter (bin/zygote.py): a stage run through it behaves as `python -m` does, byte for
byte on its output and its files, with the same exit status, signals and clean-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote serves Linux only")

PROBE = textwrap.dedent('''
    import os, sys, time
    print("argv", sys.argv[1:], "cwd", os.getcwd(), "X", os.environ.get("X"), "path0", sys.path[0], __name__)
    print("on stderr", file=sys.stderr)
    print("stdin", repr(sys.stdin.read()))
    print("umask", oct(os.umask(0o22)))
    import random
    print("random", random.random() != float(os.environ.get("LAST", "2")))
    if "--sleep" in sys.argv:
        open(os.environ["MARK"], "w").write(str(os.getpid()))
        time.sleep(60)
    if "--pool" in sys.argv:  # idle non-daemon workers at exit: the interpreter's shutdown stops them (MLflow's)
        from concurrent.futures import ThreadPoolExecutor
        print("pool", ThreadPoolExecutor(2).submit(lambda: 6 * 7).result())
        import atexit
        atexit.register(lambda: print("atexit ran"))
    if "--boom" in sys.argv:
        raise RuntimeError("boom")
    if "--numbers" in sys.argv:
        import torch
        torch.manual_seed(0)
        x = torch.randn(64, 64)
        print("numbers", (x @ x).sum().item(), torch.get_num_threads())
    sys.exit(int(os.environ.get("CODE", "0")))
''')


@pytest.fixture
def probe(tmp_path, monkeypatch):
    (tmp_path / "probe_mod.py").write_text(PROBE)
    monkeypatch.setenv("LMMREG_ZYGOTE_DIR", str(tmp_path / "z"))
    yield tmp_path
    # every server of this test's directory: its socket goes, and it exits within seconds
    subprocess.run([sys.executable, "-S", str(REPO / "bin/zygote.py"), "stop"], capture_output=True,
                   env={**os.environ, "LMMREG_ZYGOTE_DIR": str(tmp_path / "z")})


def _run(tmp: Path, *args: str, zygote: bool, stdin: str = "", **env) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": str(tmp), "LMMREG_ZYGOTE": "1" if zygote else "0", **env}
    return subprocess.run([str(REPO / "bin/python"), "-m", "probe_mod", *args], cwd=tmp, env=e, input=stdin,
                          capture_output=True, text=True, timeout=180)


def test_a_module_runs_as_python_m_runs_it(probe):
    """Same argv, working directory, environment, sys.path, stdin, stdout/stderr, umask and exit status; the
    server does not keep the caller's pipes open (capture_output returns), and the second call is served warm."""
    plain = _run(probe, "a", "b c", zygote=False, stdin="hello\n", X="1", CODE="3")
    served = [_run(probe, "a", "b c", zygote=True, stdin="hello\n", X="1", CODE="3") for _ in range(2)]
    assert plain.returncode == 3 and "argv ['a', 'b c']" in plain.stdout and "'hello\\n'" in plain.stdout
    for s in served:
        assert (s.returncode, s.stdout, s.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert len(list((probe / "z").glob("*.sock"))) == 1  # one server, reused


def test_a_failure_prints_its_traceback_and_exits_1(probe):
    plain, served = (_run(probe, "--boom", zygote=z) for z in (False, True))
    assert plain.returncode == served.returncode == 1
    assert "RuntimeError: boom" in served.stderr and served.stdout == plain.stdout


def test_exit_stops_idle_worker_threads_and_runs_atexit(probe):
    """A ThreadPoolExecutor left open (as MLflow's async logging leaves one) ends as at a plain exit: threading's
    exit hooks, the join of non-daemon threads, then atexit, in the interpreter's order."""
    plain, served = (_run(probe, "--pool", zygote=z) for z in (False, True))
    assert plain.returncode == served.returncode == 0
    assert "pool 42" in served.stdout and served.stdout.endswith("atexit ran\n") and served.stdout == plain.stdout


def test_torch_numbers_and_threads_are_a_fresh_process_s(probe):
    plain, served = (_run(probe, "--numbers", zygote=z, OMP_NUM_THREADS="1") for z in (False, True))
    line = [x for x in plain.stdout.splitlines() if x.startswith("numbers")]
    assert line and line == [x for x in served.stdout.splitlines() if x.startswith("numbers")]


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_signal_to_the_caller_ends_the_stage(probe, how):
    """SIGTERM is relayed (the caller dies of it, as a plain process would); a SIGKILLed caller's stage is
    killed by the server."""
    mark = probe / "child.pid"
    env = {**os.environ, "PYTHONPATH": str(probe), "LMMREG_ZYGOTE": "1", "MARK": str(mark)}
    _run(probe, zygote=True)  # the server is up
    p = subprocess.Popen([str(REPO / "bin/python"), "-m", "probe_mod", "--sleep"], cwd=probe, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not mark.exists() or not mark.read_text():
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    child = int(mark.read_text())
    assert child != p.pid  # it ran in the server's child
    p.send_signal(getattr(signal, how))
    assert p.wait(timeout=30) == -getattr(signal, how)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child}").exists() and "Z" not in Path(f"/proc/{child}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, f"stage {child} outlived its caller"
        time.sleep(0.05)


def test_without_a_server_the_stage_runs_plainly(probe, tmp_path):
    """A zygote directory that cannot be made: the stage still runs (plain python -m), with the same output."""
    (tmp_path / "file").write_text("")
    served = _run(probe, "a", zygote=True, LMMREG_ZYGOTE_DIR=str(tmp_path / "file" / "z"))
    assert served.returncode == 0 and "argv ['a']" in served.stdout
