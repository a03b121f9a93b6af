"""keel's runner: a warm process beside `keel server start`'s Prefect server that runs the pipeline commands.

A `keel run` on one batch spends seconds importing Prefect, SQLModel, LightGBM and Alibi Detect before its
work starts. `keel server start` therefore also starts this runner, which imports all of that once. For each
`keel run`, `keel demo` or `keel replay`, the `keel` process passes its arguments, environment, working folder,
resource limits, umask and niceness, and its standard input, output and error (the descriptors themselves, over
a Unix socket only its user can open) to the runner, which forks a child that runs the command exactly as the `keel` process would have; the
`keel` process waits, forwards Ctrl-C and termination to the child, and exits with the child's code. It
imports none of the heavy modules itself.

A runner serves only the code and the libraries it imported: a `keel` whose source or installed packages differ
(an edit, an upgrade) runs the command itself and says so once. Without a runner, or with KEEL_RUNNER=off, every
command runs in its own process, as before.

This module's top level imports only the standard library: the `keel` command imports it on every call (finding
a runner reads its record with keel.flows.local_server, which imports no more).
"""

from __future__ import annotations

import array
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

COMMANDS = ("run", "demo", "replay")
"""The commands the runner serves: those that import the pipeline's libraries and run flows."""

_LENGTH = struct.Struct("!I")
_FDS = 3  # standard input, output, error


@dataclass(frozen=True)
class Runner:
    pid: int
    socket: str
    log: str
    code: str


def record_path(prefect_home: Path) -> Path:
    return prefect_home / "runner.json"


def prefect_home() -> Path:
    """Where configure_prefect puts PREFECT_HOME, worked out without importing keel's settings."""
    if os.environ.get("PREFECT_HOME"):
        return Path(os.environ["PREFECT_HOME"]).expanduser()
    return Path(os.environ.get("KEEL_HOME") or ".keel").expanduser().resolve() / "prefect"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"keel.cli.runner" in cmdline


def running(home: Path) -> Runner | None:
    """The home's runner when its process is alive; a stale record is removed."""
    from keel.flows.local_server import read_record

    return read_record(record_path(home), Runner, _alive)


def code_digest() -> str:
    """keel's source as this interpreter would import it, the packages installed beside it and PYTHONPATH: a
    runner serves a command only when this is the same as when it started."""
    import importlib.util
    import sysconfig

    from keel.core.pipeline.code import source_digest  # the digest of the cached tasks' keys, over each root

    digest = hashlib.sha256(f"{sys.version}\n{sys.prefix}\n{os.environ.get('PYTHONPATH', '')}\n".encode())
    for name in ("keel", "keel.core", "keel.flows", "keel.cli", "keel.tui"):
        spec = importlib.util.find_spec(name)
        for root in sorted(spec.submodule_search_locations or []) if spec else []:
            digest.update(f"{name}:{source_digest(Path(root))}\n".encode())
    for key in ("purelib", "platlib"):  # an upgrade changes a dist-info folder's name (its version)
        folder = Path(sysconfig.get_paths()[key])
        names = sorted(p for p in os.listdir(folder) if p.endswith((".dist-info", ".egg-info"))) if folder.is_dir() else []
        digest.update("\n".join(names).encode())
    return digest.hexdigest()


# --- the `keel` side: hand the command to the runner ----------------------------------------------------------


def _off() -> bool:
    return os.environ.get("KEEL_RUNNER", "").strip().lower() in ("0", "off", "false", "no")


def served_command(argv: list[str]) -> str | None:
    """The command the runner would serve for these arguments (`keel [--debug] run ...`), else None."""
    args = list(argv)
    while args and args[0] == "--debug":
        args.pop(0)
    if not args or args[0] not in COMMANDS or "--help" in args or "-h" in args:
        return None
    return args[0]


def delegate(argv: list[str]) -> int | None:
    """Run `keel ARGV` in this home's runner; its exit code, or None when this process must run it itself (no
    runner, another command, KEEL_RUNNER=off, or a runner with other code)."""
    if _off() or os.environ.get("KEEL_RUNNER_CHILD") or served_command(argv) is None:
        return None
    runner = running(prefect_home())
    if runner is None:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(runner.socket)
        payload = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "code": code_digest(),
                              **_process_settings()}).encode()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        fds = array.array("i", range(_FDS))
        conn.sendmsg([_LENGTH.pack(len(payload)), payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        conn.settimeout(30)  # a runner that does not answer (stopped, wedged): run here
        replies = conn.makefile("rb")
        first = json.loads(replies.readline() or b"{}")
        conn.settimeout(None)
    except (OSError, ValueError):  # the runner went away meanwhile: run here
        conn.close()
        return None
    if "pid" not in first:
        conn.close()
        if first.get("refused") == "code":
            print(f"keel: this home's runner (pid {runner.pid}) runs other keel code or packages, so this command "
                  "runs here ('keel server stop' and 'keel server start' renew it)", file=sys.stderr)
        return None
    return _wait(conn, replies, int(first["pid"]))


_LIMITS = ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_RSS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CPU", "RLIMIT_CORE",
           "RLIMIT_NPROC", "RLIMIT_MEMLOCK")


def _process_settings() -> dict[str, Any]:
    """What a process inherits besides its environment: resource limits (`ulimit`), umask, niceness."""
    import resource

    umask = os.umask(0)
    os.umask(umask)
    limits = {name: resource.getrlimit(getattr(resource, name)) for name in _LIMITS if hasattr(resource, name)}
    return {"limits": limits, "umask": umask, "nice": os.getpriority(os.PRIO_PROCESS, 0)}


def _apply_process_settings(request: dict[str, Any]) -> None:
    """Take the `keel` process's limits, umask and niceness: a limit can only be lowered, niceness only raised."""
    import resource

    def lower(a: int, b: int) -> int:
        if a == resource.RLIM_INFINITY:
            return b
        return a if b == resource.RLIM_INFINITY else min(a, b)

    for name, (soft, hard) in request.get("limits", {}).items():
        which = getattr(resource, name, None)
        if which is None:
            continue
        own_soft, own_hard = resource.getrlimit(which)
        new_hard = lower(hard, own_hard)
        try:
            resource.setrlimit(which, (lower(soft, new_hard), new_hard))
        except (ValueError, OSError):
            pass
    os.umask(int(request.get("umask", 0o022)))
    try:
        if int(request.get("nice", 0)) > os.getpriority(os.PRIO_PROCESS, 0):
            os.setpriority(os.PRIO_PROCESS, 0, int(request["nice"]))
    except OSError:
        pass


def _wait(conn: socket.socket, replies: Any, child: int) -> int:
    """Wait for the child's exit code, forwarding Ctrl-C, SIGTERM and SIGHUP to it meanwhile."""
    def forward(signum: int, frame: Any) -> None:
        try:
            os.kill(child, signum)
        except OSError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    while True:
        try:
            line = replies.readline()
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries reads itself
            continue
    conn.close()
    try:
        return int(json.loads(line)["exit"])
    except (ValueError, KeyError, TypeError):
        print("keel: this home's runner ended before the command did (see its log: 'keel server status')",
              file=sys.stderr)
        return 1


# --- the runner's side -------------------------------------------------------------------------------------


def start(home: Path, timeout: float = 180.0) -> subprocess.Popen[bytes] | None:
    """Launch the home's runner unless one runs; returns the process (see :func:`wait_ready`), or None."""
    if running(home) is not None:
        return None
    env = dict(os.environ)
    env.pop("KEEL_RUNNER_CHILD", None)
    with open(home / "runner.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "keel.cli.runner", str(home)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def wait_ready(home: Path, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> Runner | None:
    """The runner once it answers (its record names it), None when it died or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        runner = running(home)
        if runner is not None and runner.pid == proc.pid:
            return runner
        time.sleep(0.1)
    if proc.poll() is None:
        proc.terminate()
    return None


def stop(home: Path, timeout: float = 60.0) -> Runner | None:
    """Stop the home's runner: the commands it is running are ended (SIGTERM) and reported to their `keel`."""
    from keel.flows.local_server import end_process

    runner = running(home)
    if runner is None:
        return None
    end_process(runner.pid, _alive, timeout)
    record_path(home).unlink(missing_ok=True)
    return runner


WARM = ("keel.flows.run_pipeline",  # first: it configures Prefect from KEEL_HOME, then imports it and keel.core
        "keel.cli.main",  # every command's module, keel.cli.pipeline among them
        "keel.core.pipeline.recall", "keel.core.monitoring.hooks", "prefect.flow_engine", "prefect.task_engine",
        "lightgbm", "alibi_detect.cd")
"""What the served commands import, imported once by the runner (several seconds)."""


def _warm() -> None:
    import importlib

    for name in WARM:
        try:
            importlib.import_module(name)
        except ImportError:  # pragma: no cover - Alibi Detect absent: the scipy engine needs none
            print(f"keel runner: {name} not imported", flush=True)


def serve(home: Path) -> None:
    """The runner's loop: accept a command, fork a child for it, report the child's exit code to its `keel`."""
    import tempfile
    import threading

    _warm()
    if threading.active_count() > 1:  # forking copies only this thread: say so in the log if imports started any
        print(f"keel runner: {threading.active_count() - 1} threads started while importing", flush=True)
    folder = tempfile.mkdtemp(prefix="keel-runner-")  # mode 0700; short enough for a socket's path
    path = os.path.join(folder, "socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    stopping: list[int] = []
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.append(signum))
    code = code_digest()
    runner = Runner(os.getpid(), path, str(home / "runner.log"), code)
    record_path(home).write_text(json.dumps(asdict(runner)))
    print(f"keel runner: pid {runner.pid}, socket {path}", flush=True)
    children: dict[int, socket.socket] = {}
    orphans: set[int] = set()  # children whose `keel` went away
    try:
        while not stopping:
            waiting = [c for p, c in children.items() if p not in orphans]
            ready, _, _ = select.select([listener, wake_r, *waiting], [], [], 5.0)
            for item in ready:
                if item is listener:
                    try:
                        _accept(listener, code, children, (wake_r, wake_w))
                    except OSError as exc:  # one `keel` that went away mid-request never ends the runner
                        print(f"keel runner: a request failed: {exc}", flush=True)
                elif item is wake_r:
                    _drain(wake_r)
                else:  # a waiting `keel` went away (killed): end its command as its own death would have
                    pid = next(p for p, c in children.items() if c is item)
                    try:
                        gone = not item.recv(1, socket.MSG_PEEK)
                    except OSError:
                        gone = True
                    if gone:
                        orphans.add(pid)
                        _signal(pid, signal.SIGTERM)
            _reap(children)
            orphans &= set(children)
        for pid in list(children):
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while children and time.monotonic() < deadline:
            time.sleep(0.1)
            _reap(children)
    finally:
        try:
            if json.loads(record_path(home).read_text())["pid"] == os.getpid():
                record_path(home).unlink()
        except (OSError, ValueError, KeyError):
            pass
        listener.close()
        for leftover in (path, folder):
            try:
                os.unlink(leftover) if leftover == path else os.rmdir(leftover)
            except OSError:
                pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _reap(children: dict[int, socket.socket]) -> None:
    """Collect the children that ended and send each one's exit code to its `keel` (128 + N for a signal)."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        print(f"keel runner: pid {pid} exited with {code}", flush=True)
        try:
            conn.sendall(json.dumps({"exit": code if code >= 0 else 128 - code}).encode() + b"\n")
        except OSError:
            pass
        conn.close()


def _accept(listener: socket.socket, code: str, children: dict[int, socket.socket], wake: tuple[int, int]) -> None:
    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        conn.settimeout(10)
        head, ancdata, _, _ = conn.recvmsg(_LENGTH.size, socket.CMSG_SPACE(_FDS * array.array("i").itemsize))
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                passed = array.array("i")
                passed.frombytes(data[: len(data) - len(data) % passed.itemsize])
                fds.extend(passed)
        (length,) = _LENGTH.unpack(head)
        payload = b""
        while len(payload) < length:
            chunk = conn.recv(length - len(payload))
            if not chunk:
                raise OSError("the request ended early")
            payload += chunk
        request = json.loads(payload)
        conn.settimeout(None)
    except (OSError, ValueError, struct.error) as exc:
        print(f"keel runner: a bad request: {exc}", flush=True)
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    if request.get("code") != code or len(fds) != _FDS:
        for fd in fds:
            os.close(fd)
        try:
            conn.sendall(b'{"refused": "code"}\n' if request.get("code") != code else b'{"refused": "descriptors"}\n')
        finally:
            conn.close()
        return
    pid = os.fork()
    if pid == 0:  # the child: never returns
        _child(request, fds, [listener.fileno(), conn.fileno(), *wake, *(c.fileno() for c in children.values())])
    for fd in fds:
        os.close(fd)
    children[pid] = conn
    from keel.core.errors import mask_secrets

    print(mask_secrets(f"keel runner: serving 'keel {' '.join(request['argv'])}' in pid {pid}"), flush=True)
    try:
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    except OSError:
        _signal(pid, signal.SIGTERM)


def _child(request: dict[str, Any], fds: list[int], inherited: list[int]) -> None:
    """Become the `keel` process that asked: its descriptors, folder, environment and arguments; then run it."""
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in inherited:
            os.close(fd)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdout.reconfigure(line_buffering=os.isatty(1))  # type: ignore[union-attr]
        _apply_process_settings(request)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ["KEEL_RUNNER_CHILD"] = str(os.getpid())
        sys.argv = ["keel", *request["argv"]]
        from keel.flows.settings import configure_prefect

        configure_prefect()  # this command's KEEL_HOME and PREFECT_* settings, read again by Prefect
        from keel.cli.main import main

        main()  # leaves through os._exit with the command's code
    except BaseException as exc:  # noqa: BLE001 - a child must never return into the runner's loop
        try:
            print(f"keel: the runner could not run the command: {type(exc).__name__}: {exc}", file=sys.stderr,
                  flush=True)
        finally:
            os._exit(70)
    os._exit(0)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
