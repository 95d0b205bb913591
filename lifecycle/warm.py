"""Run a stage script in a fork of a warm process: `python -m lifecycle.warm stages.train --...`.

Most of a demo stage's time is importing pandas, scikit-learn, skops and friends (about 1.5 s a
process, paid by every stage); the stage's own work is a fraction of that. Like Python's
multiprocessing forkserver (or Rails' Spring, nailgun), a server per project imports them once
and forks a child per stage; the child takes the client's stdin/stdout/stderr (passed over a unix
socket), argv, cwd, environment and umask, runs the module as `__main__` with runpy, and its exit
status comes back to the client, which exits with it (a signal n: 128 + n).

- Fresh code: the project's own modules (anything outside site-packages and the standard
  library) are never kept in the server: a child imports them from disk, as a cold process
  would. Installed modules are kept, and the server records (path, mtime_ns, size, inode) of
  each, and of each site-packages folder (a pip install changes it); before every fork it looks
  again, and on any change it refuses, exits, and the client starts a fresh server.
- What is preloaded is learned, not listed: each child writes the installed modules it imported
  to `modules-<interpreter>.json` in the runtime folder, under its module's name. Before forking
  a stage the server imports what was learned up to that stage; between requests, what the
  stages after it imported (a `dvc repro` asks for them next).
- One server per (project folder, interpreter, flags, import-time environment: see KEY_PREFIXES),
  in a folder only this user can open (0700, LIFECYCLE_WARM_DIR overrides where); it checks the
  peer's uid too. It exits after LIFECYCLE_WARM_IDLE seconds (default 30) without a request.
- LIFECYCLE_WARM=0 runs the module in this process, exactly as `python -m <module>` does. Any
  failure of the runner itself (no socket, a dead server) falls back to that, with one line on
  stderr; a stage's own failure is its exit status, never retried.

    python -m lifecycle.warm MODULE [ARGS...]     # run MODULE's __main__ warm
    python -m lifecycle.warm --stop               # stop this user's servers (in the folder above)
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import sys
import time

RUNNER = "lifecycle.warm"
IDLE_SECONDS = 30.0
START_SECONDS = 15.0  # a server binds its socket before it imports anything
# Environment read at import time (BLAS kernels and threads, numpy's CPU features, the locale,
# Python's own switches, library configs): a different value needs a different server.
KEY_PREFIXES = ("OPENBLAS_", "GOTO", "OMP_", "MKL_", "KMP_", "BLIS_", "VECLIB_", "NPY_",
                "NUMPY_", "NUMEXPR_", "SCIPY_", "SKLEARN_", "ARROW_", "PYARROW_", "PANDERA_",
                "DASK_", "MPL", "ORT_", "JOBLIB_", "PYTHON", "LIFECYCLE_", "LC_", "XDG_")
KEY_NAMES = ("LANG", "LANGUAGE", "TZ", "TMPDIR", "HOME", "MALLOC_CONF", "LD_PRELOAD",
             "LD_LIBRARY_PATH")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class RunnerError(Exception):
    """The runner cannot serve this request; the stage has not started (run it cold)."""


# --- both sides -------------------------------------------------------------------------------
def runtime_dir() -> str:
    """This user's folder of sockets, 0700; refused if anyone else could open it."""
    path = os.environ.get("LIFECYCLE_WARM_DIR") or os.path.join(
        os.environ.get("XDG_RUNTIME_DIR") or "/tmp", f"lifecycle-warm-{os.getuid()}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise RunnerError(f"cannot create {path}: {exc.strerror}") from None
    if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.getuid() \
            or st.st_mode & 0o077:
        raise RunnerError(f"{path} is not a private folder of this user (mode 0700)")
    return path


def server_key() -> str:
    """What a server must share with its clients: project, interpreter, flags, import env."""
    env = sorted((k, v) for k, v in os.environ.items()
                 if k.startswith(KEY_PREFIXES) or k in KEY_NAMES)
    parts = [os.path.realpath(os.getcwd()), sys.executable, repr(sys.flags),
             repr(sorted(sys._xoptions.items())), repr(sys.warnoptions), repr(env)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def learned_path(folder: str) -> str:
    """The modules children of this interpreter imported, in order: the next preload."""
    digest = hashlib.sha256(sys.executable.encode()).hexdigest()[:12]
    return os.path.join(folder, f"modules-{digest}.json")


def send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


# --- client -----------------------------------------------------------------------------------
def run_cold(module: str, args: list[str]) -> None:
    """Run `module` as `__main__` in this process: what `python -m module args` does."""
    import runpy

    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def connect(path: str) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        raise
    return conn


def spawn_server(path: str) -> None:
    """Start a server for `path`, detached (setsid, double fork, stdio on /dev/null), with this
    interpreter, its flags and this environment."""
    flags = sys.orig_argv[1:sys.orig_argv.index("-m")] if "-m" in sys.orig_argv else []
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the intermediate process lives a millisecond
        try:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.closerange(3, 65536)
                os.execv(sys.executable, [sys.executable, *flags, "-m", RUNNER, "--serve", path])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def open_server(path: str) -> socket.socket:
    """A connection to the server of `path`, started if none listens."""
    try:
        return connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        spawn_server(path)
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            return connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise RunnerError("the server did not start") from None
            time.sleep(0.005)


def stdio_fds() -> list[int]:
    """0, 1, 2, or /dev/null in place of a closed one (SCM_RIGHTS cannot pass a closed fd)."""
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


def run_warm(module: str, args: list[str]) -> int:
    """Run `module` in a child of the warm server; its exit code (128 + n for signal n)."""
    path = os.path.join(runtime_dir(), server_key() + ".sock")
    umask = os.umask(0)
    os.umask(umask)
    payload = json.dumps({"argv": [module, *args], "cwd": os.getcwd(), "env": dict(os.environ),
                          "umask": umask}).encode()
    payload = struct.pack("!I", len(payload)) + payload
    with Forwarder() as forwarder:
        for _attempt in range(3):  # a stale or dying server hands the request back unstarted
            try:
                conn = open_server(path)
                forwarder.conn = conn  # a signal from now on reaches the stage once it starts
                sent = socket.send_fds(conn, [payload], stdio_fds())
                conn.sendall(payload[sent:])
            except OSError as exc:
                raise RunnerError(f"cannot reach the server: {exc.strerror or exc}") from None
            with conn, conn.makefile("rb") as replies:
                first = json.loads(replies.readline() or b"{}")
                if "started" in first:
                    return exit_status(replies.readline())
                why = first.get("refused", "the server closed the connection")
    raise RunnerError(why)


class Forwarder:
    """While the stage runs elsewhere, this process's SIGINT, SIGTERM, SIGHUP and SIGQUIT go to
    it; one that came before the stage started is raised here again on the way out."""

    def __init__(self):
        self.conn: socket.socket | None = None
        self.received: list[int] = []

    def __enter__(self) -> Forwarder:
        self.saved = {signum: signal.signal(signum, self.forward) for signum in FORWARDED}
        return self

    def forward(self, signum: int, _frame) -> None:
        self.received.append(signum)
        try:
            send(self.conn, {"signal": signum})
        except (OSError, AttributeError):
            pass

    def __exit__(self, kind, *_) -> None:
        for signum, handler in self.saved.items():
            signal.signal(signum, handler)
        if kind is RunnerError and self.received:  # not started, so nothing has received it
            os.kill(os.getpid(), self.received[0])


def exit_status(line: bytes) -> int:
    if not line:
        print(f"{RUNNER}: the server stopped before the stage's exit status reached it",
              file=sys.stderr)
        return 1
    status = json.loads(line)
    return status["exit"] if "exit" in status else 128 + status["signal"]


def stop_all(folder: str) -> int:
    """Ask every server in `folder` to exit; how many were asked."""
    asked = 0
    for name in sorted(os.listdir(folder)):
        if name.endswith(".sock"):
            try:
                with connect(os.path.join(folder, name)) as conn:
                    data = json.dumps({"stop": True}).encode()
                    conn.sendall(struct.pack("!I", len(data)) + data)
                    conn.recv(1)
                asked += 1
            except OSError:
                pass
    return asked


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--serve"] and len(args) == 2:
        from lifecycle.warm_server import serve

        serve(args[1])
        return
    if args == ["--stop"]:
        try:
            print(f"{RUNNER}: asked {stop_all(runtime_dir())} server(s) to stop", file=sys.stderr)
        except RunnerError as exc:
            print(f"{RUNNER}: {exc}", file=sys.stderr)
        return
    if not args or args[0].startswith("-"):
        print(__doc__.strip().splitlines()[-2].strip(), file=sys.stderr)
        sys.exit(2)
    module, rest = args[0], args[1:]
    if os.environ.get("LIFECYCLE_WARM") == "0":
        run_cold(module, rest)
        return
    try:
        code = run_warm(module, rest)
    except RunnerError as exc:
        print(f"{RUNNER}: {exc}; running {module} in this process", file=sys.stderr)
        run_cold(module, rest)
        return
    sys.exit(code)


if __name__ == "__main__":
    main()
