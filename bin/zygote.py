"""A warm interpreter for the stages: torch, MLflow, scikit-learn and open_clip imported once, each stage forked.

Every DVC stage is a fresh `python -m lmmreg.stages.<name>` process, and on 2 cores importing torch, its
compiler front end (which `torch.optim` pulls in), MLflow, scikit-learn and open_clip takes 9-11 s: more than
most stages' own work (a demo train stage trains its 3 seeds in about 7 s). `bin/python` therefore runs
`python -S bin/zygote.py run -m <module> <args>` (this file, as a script: stdlib only, it never imports
lmmreg). That client connects to a server for this venv, starting one if there is none (which imports the
libraries, then listens on a Unix socket), and hands it its argv, working directory, environment, umask and
stdin/stdout/stderr. The server forks a child that runs the module exactly as `python -m` would (its
`sys.path`, `sys.argv`, `__main__`), in the caller's directory, with the caller's environment and file
descriptors: the stage's output goes straight to DVC's pipes or the terminal. The client relays signals to the
child's process group and exits with the child's status (killed by a signal: the same signal).

Nothing is computed in the server: it only imports, so a child starts from the same state as a fresh process
(no thread pools started, no random draws; the random modules are re-seeded from the OS as at start-up), and a
stage's numbers are the same bits either way (tests/test_zygote.py). lmmreg itself is imported by each child from
the caller's `PYTHONPATH` (its checkout's src/), never by the server, so a queued experiment's temporary checkout
runs its own code. It exits after IDLE_S seconds without work.

Safe on a shared machine (docs/security.md):
- the socket directory ($XDG_RUNTIME_DIR or /tmp, `lmmreg-zygote-<uid>`) is used only if it is a directory, not a
  symlink (lstat), owned by this user, mode 0700, in a parent no other user can rename it out of; otherwise the
  client says why on one line of stderr and runs the stage plainly. The lock and log files are opened O_NOFOLLOW;
- both ends check the other's uid (SO_PEERCRED) before anything passes: a client sends its environment (secrets
  included) and descriptors only to a server of its own user, and a server drops a connection from another user;
- one server serves one state: the key hashes the interpreter, its site-packages, this file, the whole environment
  but DENY_ENV (variables that change per call and that no preloaded library reads), the CPU affinity, nice
  value, rlimits and groups. A client never gets a server started with another HF_HUB_CACHE, thread count or
  memory limit;
- where a GPU is visible the server is off (plain `python -m`) unless LMMREG_ZYGOTE_GPU=1: nothing here tests a
  CUDA stage in a child forked from a process that imported torch.

`LMMREG_ZYGOTE=0` turns it off (plain `python -m`). Anything that goes wrong before the child starts (no server,
a server that cannot start, not Linux) falls back to a plain `python -m` as well, so the stage runs either way.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import struct
import sys
from collections.abc import Iterable, Mapping

# Imported by the server before it listens; a child still imports what is missing here, just more slowly.
PRELOAD = ("torch", "torch._dynamo", "torch.optim", "numpy", "yaml", "PIL.Image", "tqdm", "mlflow",
           "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store", "sklearn.linear_model", "sklearn.metrics",
           "threadpoolctl", "open_clip")
# The server is keyed on every environment variable but these. Each changes from one call to the next, and leaving
# it out is safe because no preloaded library reads it at import time: a child runs with the caller's whole
# environment, these included, so the stage still sees its own value.
DENY_ENV = frozenset({
    "PYTHONPATH",  # a checkout's src/ (bin/python sets it); the server starts without it and never imports lmmreg
    "DVC_STAGE",  # the stage's name (DVC sets it per stage); read by DVC, not at import
    "DVC_ROOT",  # the project root, per checkout (a queued experiment's temp copy); lmmreg reads it in the child
    "DVC_EXP_NAME",  # per experiment (DVC sets them for queued runs); read by DVC and lmmreg in the child
    "DVC_EXP_BASELINE_REV",
    "PWD",  # the shell's idea of the working directory; the child chdirs to the caller's (sent on its own)
    "OLDPWD",
    "_",  # the shell's last command (a checkout's bin/python)
    "SHLVL",  # how deep the shell is nested
    "PS1",  # the prompt: a venv's activate exports it, `bash -c` (how DVC runs a stage) drops it
    "MAKELEVEL",  # make's recursion bookkeeping (`make repro` vs `dvc repro`); read by make alone
    "MAKEFLAGS",
    "MFLAGS",
})
GPU_ENV = "LMMREG_ZYGOTE_GPU"  # "1": use the server where a GPU is visible too (off there by default)
IDLE_S = float(os.environ.get("LMMREG_ZYGOTE_IDLE_S", "300"))
START_TIMEOUT_S = 90.0  # importing PRELOAD on a busy 2-core machine; after that the stage runs without the server


# ----------------------------------------------------------------------------------------------- shared

def _key() -> str:
    """The server for this interpreter, its packages, this file and this process's state (environment, CPU
    affinity, nice, rlimits, groups): a server is shared only by callers it would have started identically."""
    import glob
    import hashlib
    import resource

    # the client runs with -S (no site): the venv's site-packages from its prefix
    site = sorted(glob.glob(os.path.join(sys.prefix, "lib", "python*", "site-packages")))
    h = hashlib.sha256()
    h.update(os.path.realpath(sys.executable).encode())
    for p in site:
        try:
            h.update(f"{p}:{os.stat(p).st_mtime_ns}".encode())
        except OSError:
            pass
    with open(__file__, "rb") as f:
        h.update(f.read())
    for var, value in sorted(os.environ.items()):
        if var not in DENY_ENV:
            h.update(f"{var}={value}\0".encode())
    limits = [(n, resource.getrlimit(getattr(resource, n))) for n in sorted(dir(resource)) if n.startswith("RLIMIT_")]
    state = (sorted(os.sched_getaffinity(0)), os.getpriority(os.PRIO_PROCESS, 0), limits, os.getgid(), os.getegid(),
             sorted(os.getgroups()))
    h.update(repr(state).encode())
    return h.hexdigest()[:16]


class UnsafeDir(Exception):
    """The socket directory is not this user's alone: the stage runs without the server."""


def dir_problem(st: os.stat_result, uid: int) -> str | None:
    """Why a socket directory with this lstat result must not be used by `uid`, or None where it may."""
    if stat.S_ISLNK(st.st_mode):
        return "it is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != uid:
        return f"it is owned by uid {st.st_uid}, not {uid}"
    if st.st_mode & 0o777 != 0o700:  # (a setgid bit, inherited from a parent, lets no one in)
        return f"it has mode {st.st_mode & 0o777:04o}, not 0700"
    return None


def peer_problem(peer: int, uid: int) -> str | None:
    """Why the other end of a connection, whose SO_PEERCRED uid is `peer`, must not be talked to, or None."""
    return None if peer == uid else f"its peer is uid {peer}, not {uid}"


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket (the kernel's word: SO_PEERCRED)."""
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


def gpu_visible(env: Mapping[str, str], devices: Iterable[str]) -> bool:
    """Whether CUDA (or ROCm) would see a GPU, from the environment and the names in /dev alone (no torch)."""
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:  # CUDA reads the list up to its first invalid entry: "", "-1" hide every GPU
        first = cvd.split(",")[0].strip()
        return bool(first) and not first.startswith("-")
    return any(d == "kfd" or (d.startswith("nvidia") and d[6:].isdigit()) for d in devices)


def _devices() -> list[str]:
    try:
        return os.listdir("/dev")
    except OSError:
        return []


def _dir() -> str:
    """This user's socket directory (made 0700 if missing); UnsafeDir where another user could reach into it."""
    d = os.path.abspath(os.environ.get("LMMREG_ZYGOTE_DIR") or os.path.join(
        os.environ.get("XDG_RUNTIME_DIR") or "/tmp", f"lmmreg-zygote-{os.getuid()}"))
    try:
        os.makedirs(d, mode=0o700)
    except FileExistsError:  # a directory, or something else at its name (a symlink, a file): lstat says which
        pass
    problem = dir_problem(os.lstat(d), os.getuid())
    parent = os.stat(os.path.dirname(d))
    if problem is None and parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX:
        problem = "its parent is writable by others and not sticky (they could swap the directory)"
    if problem is not None:
        raise UnsafeDir(f"{d}: {problem}")
    return d


def _open_private(path: str, flags: int) -> int:
    """A file in the socket directory, never through a symlink someone left at its name."""
    return os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def _send(sock: socket.socket, obj: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    msg = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(sock, [msg], fds)
    else:
        sock.sendall(msg)


class _Reader:
    """Length-prefixed JSON messages from a stream socket (the first may carry file descriptors)."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf, self.fds = sock, b"", []

    def feed(self) -> bool:
        """Read what is there; False at end of stream."""
        data, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 8)
        self.fds += fds
        self.buf += data
        return bool(data)

    def messages(self):
        while len(self.buf) >= 4:
            (n,) = struct.unpack("!I", self.buf[:4])
            if len(self.buf) < 4 + n:
                return
            msg, self.buf = json.loads(self.buf[4:4 + n]), self.buf[4 + n:]
            yield msg


# ----------------------------------------------------------------------------------------------- client

def _plain(args: list[str]) -> None:
    """Run `python <args>` in this process's place (site enabled): the stage without the server."""
    os.execv(sys.executable, [sys.executable, *args])


def _connect(path: str) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return s
    except OSError:
        s.close()
        return None


def _server(path: str) -> socket.socket | None:
    """A connection to this key's server, starting it (one starter at a time, under a lock) where none runs."""
    import fcntl
    import subprocess
    import time

    sock = _connect(path)
    if sock is not None:
        return sock
    with open(_open_private(path + ".lock", os.O_RDWR), "r+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = _connect(path)  # another client started it meanwhile
        if sock is not None:
            return sock
        if os.path.exists(path):
            os.unlink(path)  # a server that died without cleaning up
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no checkout's src/ in the server
        log = _open_private(path + ".log", os.O_WRONLY | os.O_APPEND)
        try:
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", path], env=env, cwd="/",
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, close_fds=True)
        finally:
            os.close(log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return None  # the server failed (its log says why): run the stage without it
            if os.path.exists(path) and (sock := _connect(path)) is not None:
                return sock
            time.sleep(0.05)
        return None


def client(args: list[str]) -> None:
    """Run `python <args>` (`-m module ...`) in a child of the server; exit as it exited."""
    if os.environ.get("LMMREG_ZYGOTE", "1") == "0" or not sys.platform.startswith("linux") or args[:1] != ["-m"]:
        _plain(args)
    if os.environ.get(GPU_ENV) != "1" and gpu_visible(os.environ, _devices()):
        _plain(args)  # docs/security.md: off where a GPU is visible, unless asked for
    try:
        sock = _server(os.path.join(_dir(), _key() + ".sock"))
        if sock is not None and (problem := peer_problem(peer_uid(sock), os.getuid())) is not None:
            sock.close()
            raise UnsafeDir(f"the server's socket: {problem}")
    except UnsafeDir as e:
        sys.stderr.write(f"lmmreg.zygote: not using the warm interpreter ({e}); running {args[1]} plainly\n")
        sys.stderr.flush()
        sock = None
    except OSError:
        sock = None
    if sock is None:
        _plain(args)
    umask = os.umask(0)
    os.umask(umask)
    try:
        _send(sock, {"argv": args[1:], "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask}, [0, 1, 2])
        reader = _Reader(sock)
        pid = None
        while pid is None:
            if not reader.feed():
                _plain(args)  # the server went away before the child started: nothing ran yet
            for msg in reader.messages():
                pid = msg.get("pid")
    except OSError:
        _plain(args)

    def relay(signum, _frame):
        try:
            _send(sock, {"signal": signum})
        except OSError:
            pass

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, relay)
    while True:
        more = reader.feed()  # a relayed signal interrupts it; Python retries the read (PEP 475)
        for msg in reader.messages():
            if "exit" in msg:
                code, sig = msg["exit"], msg.get("killed_by")
                if sig:
                    signal.signal(sig, signal.SIG_DFL)
                    os.kill(os.getpid(), sig)
                os._exit(code)
        if not more:
            sys.stderr.write(f"lmmreg.zygote: the stage server went away while {args[1]} (pid {pid}) ran\n")
            os._exit(1)


# ----------------------------------------------------------------------------------------------- server

def _child(conn: socket.socket, req: dict, fds: list[int], others: list) -> None:
    """In the forked child: become `python -m <module> <args>` of the caller, run it, exit with its status."""
    import atexit
    import runpy
    import threading
    import traceback

    try:
        for s in others:  # the server's sockets, selector and wake-up pipe
            s.close() if hasattr(s, "close") else os.close(s)
        conn.close()
        os.setpgid(0, 0)  # the client relays signals to this group (the stage and any helper processes it starts)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(s, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(req["cwd"])
        os.umask(req["umask"])
        os.environ.clear()
        os.environ.update(req["env"])
        sys.dont_write_bytecode = bool(req["env"].get("PYTHONDONTWRITEBYTECODE"))
        unbuffered = bool(req["env"].get("PYTHONUNBUFFERED"))
        for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
            stream.reconfigure(line_buffering=fd == 2 or os.isatty(fd), write_through=unbuffered)
        # sys.path as `python -m` builds it: the working directory, PYTHONPATH, then the interpreter's own.
        extra = [p for p in req["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [os.getcwd(), *extra, *sys.path]
        import random

        random.seed()  # as a fresh process: not the server's state
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
    except BaseException:  # noqa: BLE001 - the caller sees why on its stderr
        traceback.print_exc()
        os._exit(70)
    code = 0
    module, sys.argv = req["argv"][0], req["argv"][:]
    try:  # `ps`/`top` show the stage, not the server's command line (which the fork inherited)
        with open("/proc/self/comm", "w") as f:
            f.write(module.rsplit(".", 1)[-1][:15])
    except OSError:
        pass
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:  # noqa: BLE001 - as the interpreter does: the traceback, exit 1
        traceback.print_exc()
        code = 1
    finally:
        # The interpreter's own shutdown, in its order (Py_FinalizeEx): threading's exit hooks (they stop, e.g.,
        # a ThreadPoolExecutor's idle workers) and its join of the non-daemon threads, then the atexit functions.
        threading._shutdown()
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    if code == -signal.SIGINT:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF if code >= 0 else 1)


def serve(path: str) -> None:
    """Import PRELOAD, listen on `path`, fork a child per request; exit after IDLE_S seconds without any."""
    import importlib
    import selectors
    import threading
    import time

    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - the child imports it (and fails) itself
            print(f"lmmreg.zygote: preload {name}: {e}", file=sys.stderr, flush=True)
    # A Python thread could hold a lock the child then never gets back: serve nothing. (Native pools that start at
    # load time, OpenBLAS's and jemalloc's, re-arm through their fork handlers, as under multiprocessing's fork.)
    if threading.active_count() > 1:
        print(f"lmmreg.zygote: {threading.active_count()} Python threads after the imports; not serving",
              file=sys.stderr)
        sys.exit(1)
    os.setpgid(0, 0)  # a Ctrl-C meant for one stage does not stop the server other stages use
    os.umask(0o077)  # its socket is this user's alone, whatever the directory (each child gets its caller's umask)
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    tmp = f"{path}.{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(tmp)
    listener.listen(64)
    os.replace(tmp, path)  # clients connect only once the imports are done
    ino = os.stat(path).st_ino
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(rfd, selectors.EVENT_READ, "child")
    readers: dict[socket.socket, _Reader] = {}
    pids: dict[socket.socket, int] = {}
    conns: dict[int, socket.socket] = {}
    idle_since = time.monotonic()

    def mine() -> bool:
        """Whether the socket path is still this server's (`stop` removed it, or another server replaced it)."""
        try:
            return os.stat(path).st_ino == ino
        except OSError:
            return False

    def close(conn: socket.socket) -> None:
        sel.unregister(conn)
        readers.pop(conn, None)
        pid = pids.pop(conn, None)
        if pid is not None and conns.get(pid) is conn:
            conns.pop(pid)
            try:
                os.killpg(pid, signal.SIGKILL)  # the caller is gone (killed): so is its stage
            except OSError:
                pass
        conn.close()

    try:
        while True:
            if not readers and not conns and (time.monotonic() - idle_since > IDLE_S or not mine()):
                break
            for key, _ in sel.select(timeout=5.0):
                if key.data == "accept":
                    conn, _ = listener.accept()
                    if (problem := peer_problem(peer_uid(conn), os.getuid())) is not None:
                        print(f"lmmreg.zygote: dropped a connection: {problem}", file=sys.stderr, flush=True)
                        conn.close()  # before reading a byte: descriptors it sent are closed with it
                        continue
                    readers[conn] = _Reader(conn)
                    sel.register(conn, selectors.EVENT_READ, "conn")
                elif key.data == "child":
                    os.read(rfd, 4096)
                    while True:
                        try:
                            pid, status = os.waitpid(-1, os.WNOHANG)
                        except ChildProcessError:
                            break
                        if pid == 0:
                            break
                        conn = conns.pop(pid, None)
                        if conn is None:
                            continue
                        pids.pop(conn, None)
                        msg = {"exit": os.waitstatus_to_exitcode(status)}
                        if msg["exit"] < 0:
                            msg = {"exit": 1, "killed_by": -msg["exit"]}
                        try:
                            _send(conn, msg)
                        except OSError:
                            pass
                        close(conn)
                        idle_since = time.monotonic()
                else:
                    conn = key.fileobj
                    reader = readers[conn]
                    try:
                        alive = reader.feed()
                    except OSError:
                        alive = False
                    for msg in reader.messages():
                        if "argv" in msg and conn not in pids:
                            fds, reader.fds = reader.fds, []
                            pid = os.fork()
                            if pid == 0:
                                _child(conn, msg, fds, [listener, *readers, sel, rfd, wfd])
                            for fd in fds:
                                os.close(fd)
                            pids[conn], conns[pid] = pid, conn
                            _send(conn, {"pid": pid})
                        elif "signal" in msg and conn in pids:
                            try:
                                os.killpg(pids[conn], msg["signal"])
                            except OSError:
                                pass
                    if not alive:
                        close(conn)
    finally:
        if mine():
            try:
                os.unlink(path)
            except OSError:
                pass
        listener.close()


def stop() -> int:
    """Stop every server of this user (of LMMREG_ZYGOTE_DIR): their sockets go, and each exits within seconds
    once its running stages are done. Returns how many there were."""
    import glob

    n = 0
    try:
        d = _dir()
    except (UnsafeDir, OSError) as e:
        print(f"lmmreg.zygote: {e}", file=sys.stderr)
        return 0
    for path in glob.glob(os.path.join(d, "*.sock")):
        try:
            os.unlink(path)
            n += 1
        except OSError:
            pass
    return n


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"]:
        client(sys.argv[2:])
    elif sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2])
    elif sys.argv[1:2] == ["stop"]:
        print(f"stopped {stop()} stage server(s)")
    else:
        sys.exit("usage: zygote.py run -m <module> [args ...] | serve <socket> | stop")
