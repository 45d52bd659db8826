"""bin/python's warm interpreter (bin/zygote.py): a stage run through it behaves as `python -m` does, byte for
byte on its output and its files, with the same exit status, signals and clean-up; and on a shared machine it
talks only to its own user, in its own directory, through a server started with its own environment.

The tests run as one user: another user is simulated by changing what the real checks read (the directory's
lstat, the peer's SO_PEERCRED uid) in a harness that loads bin/zygote.py as a module."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote serves Linux only")
ZYGOTE = REPO / "bin/zygote.py"

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
    if "--hf" in sys.argv:  # read once, when huggingface_hub is imported (open_clip imports it in the server)
        import huggingface_hub.constants
        print("hf cache", huggingface_hub.constants.HF_HUB_CACHE)
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
    monkeypatch.setenv("LMMREG_ZYGOTE_GPU", "1")  # on a GPU machine too: these probes never touch CUDA
    yield tmp_path
    # every server of this test's directory: its socket goes, and it exits within seconds
    subprocess.run([sys.executable, "-S", str(ZYGOTE), "stop"], capture_output=True,
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
    _run(probe, zygote=True, MARK=str(mark))  # the server for this environment is up
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


# ------------------------------------------------------------------------------------- on a shared machine

# Loads bin/zygote.py as a module, makes the real checks read another uid where asked, then runs its client (or,
# `serve <path>`, a server that preloads nothing, to start in a second).
HARNESS = textwrap.dedent('''
    import importlib.util, os, sys, time
    spec = importlib.util.spec_from_file_location("zygote", sys.argv[1])
    z = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(z)
    how, rest = sys.argv[2], sys.argv[3:]
    if how == "foreign-dir":  # the directory's lstat as if another user owned it
        real_problem = z.dir_problem
        def dir_problem(st, uid):
            fields = list(st)
            fields[4] = uid + 1  # st_uid
            return real_problem(os.stat_result(fields), uid)
        z.dir_problem = dir_problem
    elif how == "foreign-peer":  # the other end of every connection as if another user held it
        real_uid = z.peer_uid
        z.peer_uid = lambda sock: real_uid(sock) + 1
    if rest[0] == "serve":
        z.PRELOAD = ()
        z.serve(rest[1])
    elif rest[0] == "fake-server":  # a listener at this client's socket path: how many bytes came, then it hangs up
        path = os.path.join(z._dir(), z._key() + ".sock")
        if os.fork() == 0:
            s = z.socket.socket(z.socket.AF_UNIX, z.socket.SOCK_STREAM)
            s.bind(path + ".tmp")
            s.listen(1)
            os.replace(path + ".tmp", path)  # as the server does: the path appears once it accepts
            conn, _ = s.accept()
            open(rest[1], "w").write(str(len(conn.recv(1 << 20))))  # 0: the client closed without a byte
            os._exit(0)
        while not os.path.exists(path):
            time.sleep(0.01)
        z.client(rest[2:])
    else:
        z.client(rest)
''')


def _harness(tmp: Path, how: str, *args: str, **env) -> subprocess.CompletedProcess:
    (tmp / "harness.py").write_text(HARNESS)
    e = {**os.environ, "PYTHONPATH": str(tmp), **env}
    return subprocess.run([sys.executable, "-S", str(tmp / "harness.py"), str(ZYGOTE), how, *args], cwd=tmp, env=e,
                          capture_output=True, text=True, timeout=180)


def _zygote():
    spec = importlib.util.spec_from_file_location("zygote_under_test", ZYGOTE)
    z = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(z)
    return z


def _refused(run: subprocess.CompletedProcess, plain: subprocess.CompletedProcess, why: str) -> None:
    """The stage ran plainly (its own output, status), after one line of stderr saying why."""
    assert (run.returncode, run.stdout) == (plain.returncode, plain.stdout)
    first, rest = run.stderr.split("\n", 1)
    assert first.startswith("lmmreg.zygote: not using the warm interpreter") and why in first, run.stderr
    assert rest == plain.stderr


@pytest.mark.parametrize("mode", [0o777, 0o755])
def test_a_directory_others_can_reach_is_refused_and_the_stage_runs_plainly(probe, mode):
    z = probe / "z"
    z.mkdir()
    z.chmod(mode)
    plain = _run(probe, "a", zygote=False)
    run = _run(probe, "a", zygote=True)
    _refused(run, plain, f"mode {mode:04o}, not 0700")
    assert list(z.iterdir()) == []  # no lock, log or socket written in it


def test_a_symlinked_directory_is_refused(probe):
    (probe / "real").mkdir(mode=0o700)
    (probe / "z").symlink_to(probe / "real")
    plain = _run(probe, "a", zygote=False)
    _refused(_run(probe, "a", zygote=True), plain, "is a symlink")
    assert list((probe / "real").iterdir()) == []


def test_a_directory_owned_by_another_uid_is_refused(probe):
    plain = _run(probe, "a", zygote=False)
    run = _harness(probe, "foreign-dir", "-m", "probe_mod", "a", LMMREG_ZYGOTE="1")
    _refused(run, plain, f"owned by uid {os.getuid() + 1}, not {os.getuid()}")
    assert list((probe / "z").iterdir()) == []


def _received(probe: Path) -> int:
    deadline = time.monotonic() + 30
    while not (probe / "received").exists() or not (probe / "received").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return int((probe / "received").read_text())


def test_the_client_sends_nothing_to_a_server_of_another_uid(probe):
    """It reads the server's uid before it sends a byte (its environment holds the user's secrets)."""
    plain = _run(probe, "a", zygote=False)
    run = _harness(probe, "foreign-peer", "fake-server", str(probe / "received"), "-m", "probe_mod", "a")
    _refused(run, plain, f"its peer is uid {os.getuid() + 1}")
    assert _received(probe) == 0


def _request(path: Path, probe: Path, out: Path) -> list[dict]:
    """Ask the server at `path` to run probe_mod (stdout to `out`); the messages it answers until it hangs up."""
    z = _zygote()
    env = {**os.environ, "PYTHONPATH": str(probe)}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, open(os.devnull) as stdin, out.open("w") as f:
        s.connect(str(path))
        reader, msgs = z._Reader(s), []
        try:
            z._send(s, {"argv": ["probe_mod", "b"], "cwd": str(probe), "env": env, "umask": 0o22},
                    [stdin.fileno(), f.fileno(), f.fileno()])
            while reader.feed():
                msgs += reader.messages()
        except (BrokenPipeError, ConnectionResetError):  # it hung up, our request unread (a client runs plainly)
            pass
    return msgs


@pytest.mark.parametrize("peer", ["own", "foreign"])
def test_the_server_drops_a_peer_of_another_uid(probe, peer):
    """The same request is run for its own user (the control) and dropped unread for another."""
    z = probe / "z"
    z.mkdir(mode=0o700)
    path, log = z / "s.sock", probe / "server.log"
    (probe / "harness.py").write_text(HARNESS)
    with log.open("w") as err:
        server = subprocess.Popen([sys.executable, "-S", str(probe / "harness.py"), str(ZYGOTE),
                                   "foreign-peer" if peer == "foreign" else "none", "serve", str(path)],
                                  cwd=probe, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while not path.exists():
            assert time.monotonic() < deadline and server.poll() is None, log.read_text()
            time.sleep(0.05)
        msgs = _request(path, probe, probe / "out.txt")
    finally:
        server.terminate()
        server.wait(timeout=30)
    if peer == "own":
        assert "pid" in msgs[0] and msgs[-1] == {"exit": 0}
        assert "argv ['b']" in (probe / "out.txt").read_text()
    else:
        assert msgs == [] and (probe / "out.txt").read_text() == ""
        assert f"dropped a connection: its peer is uid {os.getuid() + 1}, not {os.getuid()}" in log.read_text()


def test_a_server_started_with_another_hf_hub_cache_is_not_reused(probe):
    """huggingface_hub reads HF_HUB_CACHE once, at import, in the server: a client with another gets its own."""
    a, b = (_run(probe, "--hf", zygote=True, HF_HUB_CACHE=str(probe / c)) for c in ("cache-a", "cache-b"))
    assert f"hf cache {probe / 'cache-a'}\n" in a.stdout and f"hf cache {probe / 'cache-b'}\n" in b.stdout
    assert len(list((probe / "z").glob("*.sock"))) == 2


def test_what_keys_the_server():
    """The whole environment but the per-call deny-list, and the process's limits."""
    z = _zygote()
    env = dict(os.environ)
    try:
        base = z._key()
        os.environ["DVC_STAGE"], os.environ["PWD"] = "train@demo-finetune", "/elsewhere"
        assert z._key() == base
        os.environ["SOME_SECRET_OR_SETTING"] = "1"
        assert z._key() != base
    finally:
        os.environ.clear()
        os.environ.update(env)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))  # lowering a soft limit is always allowed
        assert z._key() != base
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert z._key() == base


def test_directory_checks_on_simulated_lstat_results():
    z, uid = _zygote(), os.getuid()

    def st(mode: int, owner: int) -> os.stat_result:
        return os.stat_result((mode, 0, 0, 1, owner, 0, 0, 0, 0, 0))

    assert z.dir_problem(st(stat.S_IFDIR | 0o700, uid), uid) is None
    assert z.dir_problem(st(stat.S_IFDIR | stat.S_ISGID | 0o700, uid), uid) is None
    assert "owned by uid" in z.dir_problem(st(stat.S_IFDIR | 0o700, uid + 1), uid)
    assert "mode 0770" in z.dir_problem(st(stat.S_IFDIR | 0o770, uid), uid)
    assert "symlink" in z.dir_problem(st(stat.S_IFLNK | 0o777, uid), uid)
    assert "not a directory" in z.dir_problem(st(stat.S_IFREG | 0o700, uid), uid)
    assert z.peer_problem(uid, uid) is None and "uid" in z.peer_problem(uid + 1, uid)


@pytest.mark.parametrize("env, devices, visible", [
    ({}, ["null", "tty0"], False),
    ({}, ["nvidia0", "nvidiactl", "nvidia-uvm"], True),
    ({}, ["nvidia3", "nvidiactl"], True),  # a container given the fourth GPU
    ({}, ["nvidiactl", "nvidia-uvm"], False),  # the driver, no device
    ({}, ["kfd", "dri"], True),  # ROCm
    ({"CUDA_VISIBLE_DEVICES": ""}, ["nvidia0"], False),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, ["nvidia0"], False),
    ({"CUDA_VISIBLE_DEVICES": "0"}, [], True),
    ({"CUDA_VISIBLE_DEVICES": "GPU-5c2f,1"}, [], True),
])
def test_gpu_visible(env, devices, visible):
    assert _zygote().gpu_visible(env, devices) is visible


def test_where_a_gpu_is_visible_the_server_is_off_unless_asked_for(probe):
    """Off: the stage runs plainly and no directory is even made. Asked for: the client sends its request to the
    server (here a listener that hangs up after reading it, so the stage then runs plainly)."""
    plain = _run(probe, "a", zygote=False)
    off = _run(probe, "a", zygote=True, CUDA_VISIBLE_DEVICES="0", LMMREG_ZYGOTE_GPU="0")
    assert (off.returncode, off.stdout, off.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert not (probe / "z").exists()
    on = _harness(probe, "none", "fake-server", str(probe / "received"), "-m", "probe_mod", "a",
                  CUDA_VISIBLE_DEVICES="0", LMMREG_ZYGOTE_GPU="1")
    assert (on.returncode, on.stdout, on.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert _received(probe) > 0
