"""The server behind `lifecycle.warm`: learn and preload imports, fork a child per request.

One thread, one selector: the listening socket, each client's connection (a signal to forward,
or its end: then the child is killed) and each child's pidfd (its exit status goes back). Between
events it imports the next learned module, so a request never waits for the whole preload.

Threads and fork: the server starts no Python thread, and a module whose import starts one is
never preloaded again (a fork copies a lock another thread may hold). Native pools that imports
start (numpy's and scipy's OpenBLAS, pyarrow's jemalloc) register fork handlers (pthread_atfork)
that stop or reset their threads around a fork; a child sees the BLAS kernels and thread count
a cold process sees (lifecycle/__init__.py's pin is in the server's environment before numpy
loads), and writes the same bytes (tests/test_warm.py).
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import gc
import importlib
import importlib.util
import io
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
import sysconfig
import threading
import time
import traceback

from lifecycle.warm import FORWARDED, IDLE_SECONDS, learned_path, send


def installed_folders() -> tuple[str, ...]:
    """Where installed code lives (the standard library, site-packages), with a trailing /."""
    paths = sysconfig.get_paths()
    folders = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return tuple(os.path.join(os.path.realpath(f), "") for f in folders)


INSTALLED = installed_folders()


def is_installed(module) -> bool:
    """Whether a module (or its spec) is installed code, kept warm; not source the user edits:
    the project's own modules, and anything else outside site-packages, each child imports
    afresh from disk."""
    file = getattr(module, "__file__", None) or getattr(module, "origin", None)
    return not isinstance(file, str) or installed_folder(os.path.dirname(file))


@functools.cache
def installed_folder(folder: str) -> bool:
    return os.path.join(os.path.realpath(folder), "").startswith(INSTALLED)


def read_learned(path: str) -> dict:
    try:
        with open(path) as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            return json.load(f)
    except (OSError, ValueError):
        return {}


def update_learned(path: str, module: str | None = None, imported: list[str] = (),
                   unsafe: str | None = None) -> None:
    """Add what `module`'s child imported, or a module never to preload, to the learned file
    (under its lock: children of several servers write it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    with open(fd, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            known = json.load(f)
        except ValueError:
            known = {}
        by_module, never = known.get("by_module", {}), known.get("unsafe", [])
        if module is not None:
            listed = by_module.setdefault(module, [])
            seen = set(listed)
            listed += [name for name in imported if name not in seen]
        if unsafe is not None and unsafe not in never:
            never.append(unsafe)
        f.seek(0)
        f.truncate()
        json.dump({"by_module": by_module, "unsafe": never}, f)


class Files:
    """(mtime_ns, size, inode) of every file the server's modules came from and of each
    sys.path folder: what must not change under a server that keeps them in memory."""

    def __init__(self):
        self.stamps: dict[str, tuple[int, int, int]] = {}
        self.names: set[str] = set()   # modules stamped
        self.source: set[str] = set()  # of those, the user's source: children import it afresh
        for entry in sys.path:  # a pip install adds or removes entries in site-packages
            if entry and os.path.join(os.path.realpath(entry), "").startswith(INSTALLED):
                self.add(entry)

    def add(self, path: str) -> None:
        if path not in self.stamps:
            try:
                st = os.stat(path)
            except OSError:
                return
            self.stamps[path] = (st.st_mtime_ns, st.st_size, st.st_ino)

    def record_modules(self) -> None:
        """Stamp the files of modules imported since the last call; note which are source."""
        for name, module in list(sys.modules.items()):
            if name in self.names:
                continue
            self.names.add(name)
            file = getattr(module, "__file__", None)
            if isinstance(file, str):
                self.add(file)
            if name != "__main__" and not is_installed(module):
                self.source.add(name)

    def changed(self) -> str | None:
        for path, stamp in self.stamps.items():
            try:
                st = os.stat(path)
            except OSError:
                return path
            if (st.st_mtime_ns, st.st_size, st.st_ino) != stamp:
                return path
        return None


class Server:
    def __init__(self, path: str, listener: socket.socket, lock_fd: int):
        self.path, self.listener, self.lock_fd = path, listener, lock_fd
        self.inode = os.stat(path).st_ino
        self.folder = os.path.dirname(path)
        self.idle = float(os.environ.get("LIFECYCLE_WARM_IDLE") or IDLE_SECONDS)
        self.log = open(path[:-len(".sock")] + ".log", "a", buffering=1)
        self.defaults = {}  # Python's own handlers, given back to every child
        for signum in signal.valid_signals():
            try:
                self.defaults[signum] = signal.getsignal(signum)
            except (OSError, ValueError):
                pass
        self.files = Files()
        self.files.record_modules()
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, self.accept)
        self.children: dict[int, dict] = {}  # pid -> {"conn", "pidfd"}
        self.tried: set[str] = set()
        self.draining = False
        self.last = time.monotonic()
        self.learn()
        self.queue: list[str] = []  # to import between requests
        self.say(f"serving {os.getcwd()} ({sum(map(len, self.by_module.values()))} modules "
                 "learned)")

    def say(self, text: str) -> None:
        self.log.write(f"{time.strftime('%H:%M:%S')} pid {os.getpid()}: {text}\n")

    def learn(self) -> None:
        """Queue what children of this interpreter imported, stage by stage as first seen."""
        try:
            stamp = os.stat(learned_path(self.folder)).st_mtime_ns
        except OSError:
            stamp = None
        if stamp == getattr(self, "learned_stamp", -1):
            return
        self.learned_stamp = stamp
        learned = read_learned(learned_path(self.folder))
        self.unsafe = set(learned.get("unsafe", []))
        self.by_module = learned.get("by_module", {})

    def split_at(self, module: str) -> tuple[list[str], list[str]]:
        """What children imported up to and including `module`'s (a child records only what it
        lacked, so what it uses may be listed under an earlier stage), and after it (what the
        next stages of a `dvc repro` will want; a lone run of a late stage wants little)."""
        before: list[str] = []
        after: list[str] = []
        seen = module not in self.by_module
        for stage, imported in self.by_module.items():
            (after if seen else before).extend(imported)
            seen = seen or stage == module
        return before, after

    def preload(self, name: str) -> None:
        if name in self.tried or name in sys.modules or name in self.unsafe:
            return
        self.tried.add(name)
        try:
            spec = importlib.util.find_spec(name.partition(".")[0])
            if spec is not None and is_installed(spec):  # else the name is the user's source
                importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a hint that no longer imports is skipped; the child
            pass           # that needs it imports it itself and reports what went wrong
        self.files.record_modules()  # what did import, even if its importer failed later
        if threading.active_count() > 1:  # forking a process with threads can deadlock a child
            update_learned(learned_path(self.folder), unsafe=name)
            self.drain(f"importing {name} started a thread: never preloaded again")

    def drain(self, why: str) -> None:
        """Stop taking requests (the socket goes: a client starts a fresh server); exit once
        the running children are done."""
        if self.draining:
            return
        self.draining = True
        self.say(f"exits: {why}")
        self.sel.unregister(self.listener)
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass
        self.listener.close()
        os.close(self.lock_fd)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.drain("SIGTERM"))
        while not (self.draining and not self.children):
            if self.queue and not self.draining:
                timeout = 0
            elif self.children or self.draining:
                timeout = None
            else:
                timeout = max(0.0, self.last + self.idle - time.monotonic())
            events = self.sel.select(timeout)
            for key, _ in events:
                key.data(key.fileobj)
            if events:
                continue
            if self.queue and not self.draining:
                self.preload(self.queue.pop(0))
            elif not self.children and time.monotonic() >= self.last + self.idle:
                self.drain(f"idle for {self.idle:g} s")

    def accept(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        self.last = time.monotonic()
        fds: list[int] = []
        try:
            conn.settimeout(10)
            _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            if uid != os.getuid():  # the folder is 0700 already: this is the second lock
                raise ConnectionError("another user")
            request, fds = read_request(conn)
            if request.get("stop"):
                self.drain("asked to stop")
                raise ConnectionError("stopped")
            stale = self.files.changed()
            if stale:
                self.drain(f"{stale} changed")
            if self.draining:
                send(conn, {"refused": "the server is stale or stopping"})
                raise ConnectionError("refused")
            needed, self.queue = self.split_at(request["argv"][0])
            for name in needed:
                self.preload(name)  # imported once here, not in every child; the rest later
            if self.draining:
                send(conn, {"refused": "the server is stopping"})
                raise ConnectionError("refused")
            self.start(conn, fds, request)
        except (OSError, ValueError, KeyError):
            conn.close()
        finally:
            for fd in fds:
                os.close(fd)

    def start(self, conn: socket.socket, fds: list[int], request: dict) -> None:
        gc.freeze()  # the child's collector skips the preloaded objects: no copy-on-write of them
        pid = os.fork()
        if pid == 0:
            self.become_child(conn, fds, request)
        try:
            os.setpgid(pid, pid)  # the child does it too: whichever runs first
        except OSError:
            pass
        pidfd = os.pidfd_open(pid)
        self.children[pid] = {"conn": conn, "pidfd": pidfd, "module": request["argv"][0]}
        conn.settimeout(None)  # the child says "started" once it has taken the client's place
        self.sel.register(conn, selectors.EVENT_READ, lambda c, pid=pid: self.message(pid, c))
        self.sel.register(pidfd, selectors.EVENT_READ, lambda _fd, pid=pid: self.reap(pid))

    def message(self, pid: int, conn: socket.socket) -> None:
        """A signal the client received, to pass on; or the client's end: kill the stage."""
        try:
            data = conn.recv(4096)
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(conn)
            self.children[pid]["conn"] = None
            conn.close()
            self.kill(pid, signal.SIGKILL)
            return
        for line in data.splitlines():
            try:
                signum = json.loads(line).get("signal")
            except (ValueError, AttributeError):
                continue
            if signum in FORWARDED:
                self.kill(pid, signum)

    def kill(self, pid: int, signum: int) -> None:
        try:
            os.killpg(pid, signum)  # the stage and any process it started
        except OSError:
            pass

    def reap(self, pid: int) -> None:
        child = self.children.pop(pid)
        self.sel.unregister(child["pidfd"])
        os.close(child["pidfd"])
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if child["conn"] is not None:
            self.sel.unregister(child["conn"])
            try:
                send(child["conn"], {"exit": code} if code >= 0 else {"signal": -code})
            except OSError:
                pass
            child["conn"].close()
        self.last = time.monotonic()
        self.learn()  # what it lacked, the next stages of this run may want too
        self.queue += self.by_module.get(child["module"], [])

    # --- in the child -------------------------------------------------------------------------
    def become_child(self, conn: socket.socket, fds: list[int], request: dict) -> None:
        """Take the client's place and run its module; never returns."""
        try:
            os.setpgid(0, 0)
            for signum, handler in self.defaults.items():
                try:
                    signal.signal(signum, handler)
                except (OSError, ValueError, TypeError):
                    pass
            self.sel.close()
            self.listener.close()
            os.close(self.lock_fd)
            self.log.close()
            for other in self.children.values():
                os.close(other["pidfd"])
                if other["conn"] is not None:
                    other["conn"].close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            for fd in fds:
                os.close(fd)
            reopen_stdio()
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            os.umask(request["umask"])
            for name in self.files.source:
                sys.modules.pop(name, None)  # the stage imports the project's code from disk
            before = set(sys.modules)
            send(conn, {"started": os.getpid()})
        except BaseException as exc:  # noqa: BLE001 - the runner broke, not the stage: the
            try:                      # client runs it cold
                send(conn, {"refused": f"the server could not start it: {exc!r}"})
            finally:
                os._exit(70)
        code = run_module(request["argv"])
        learn_from(before, request["argv"][0], learned_path(self.folder))
        finish(code)


def read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    """The client's JSON request (4-byte length first) and the stdio fds that came with it."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    if len(data) < 4:
        raise ValueError("short request")
    (length,) = struct.unpack("!I", data[:4])
    data = data[4:]
    while len(data) < length:
        more = conn.recv(length - len(data))
        if not more:
            raise ValueError("short request")
        data += more
    return json.loads(data), fds


def reopen_stdio() -> None:
    """sys.stdin/stdout/stderr on the client's fds, buffered as a fresh interpreter would."""
    for name, fd, mode in (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w")):
        old = getattr(sys, name)
        _KEEP.append(old)  # collecting the old wrapper would close the fd it owns
        stream = io.TextIOWrapper(open(fd, mode + "b", closefd=False), encoding=old.encoding,
                                  errors=old.errors,
                                  line_buffering=mode == "w" and (fd == 2 or os.isatty(fd)))
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


_KEEP: list = []


def run_module(argv: list[str]) -> int:
    """`python -m argv[0] argv[1:]`, in this process; its exit code as the interpreter's."""
    sys.argv = list(argv)
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        finish(None)  # the interpreter's way: die of SIGINT
    except BaseException:  # noqa: BLE001 - printed as the interpreter prints it
        sys.excepthook(*sys.exc_info())
        return 1


def learn_from(before: set[str], module: str, path: str) -> None:
    """Write the third-party modules this child imported to the learned file (a hint for the
    next preload; failing to write it changes nothing else)."""
    new = [name for name, module in list(sys.modules.items())
           if name not in before and name != "__main__" and is_installed(module)
           and getattr(getattr(module, "__spec__", None), "name", None) == name]
    try:
        if new:
            update_learned(path, module, new)
    except (OSError, ValueError):
        pass


def finish(code: int | None) -> None:
    """End the child as an interpreter ends: threads joined, atexit run, stdio flushed."""
    try:
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        if code is None:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code if code is not None else 130)


def serve(path: str) -> None:
    """Be the server of `path` unless one already is (its lock is held)."""
    lock_fd = os.open(path[:-len(".sock")] + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return
    try:
        os.unlink(path)  # left by a server that was killed
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    Server(path, listener, lock_fd).run()
