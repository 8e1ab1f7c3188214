"""Local server processes and ports, said once: free ports, waiting until a server is healthy,
stopping a process group, telling whether a recorded PID is still the process we started, and
one process at a time per lock file (and per release: MLflow tracking server and model).

Portable to Linux and macOS: a PID is probed with `os.kill(pid, 0)` and identified by its command
line, read from /proc where there is one and from `ps` elsewhere (macOS has no /proc).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from steps.cli import StepError, TransientError
from steps.redaction import url_port

LOOPBACK = "127.0.0.1"
PROC = Path("/proc")
HEALTH_POLL_S = 0.3
STOP_GRACE_S = 30.0  # seconds a stopped process group gets between SIGTERM and SIGKILL
# Set by a local run for its steps to the release lock it holds (`release_lock`): a step inside
# that run must not wait for its own run's lock.
RELEASE_LOCK_ENV = "DEWPOINT_RELEASE_LOCK"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on `host` that nothing listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """True if a server could listen on host:port now (`bind_problem` finds nothing)."""
    return bind_problem(host, port) is None


def ipv4_address(host: str) -> str:
    """The IPv4 address a server given `host` listens on: `localhost`, `127.1` and `127.0.0.1`
    are one address. The first address getaddrinfo gives for IPv4, which is the one Python's own
    `bind` takes (CPython 3.11 Modules/socketmodule.c `setipaddr`: `getaddrinfo`, then the first
    result's address).

    Raises:
        socket.gaierror: `host` has no IPv4 address.
        TransientError: the name could not be looked up now (EAI_AGAIN: no DNS answer).
    """
    try:
        found = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise TransientError(f"cannot look up host {host!r} now: {exc.strerror}") from None
        raise
    return found[0][4][0]


def no_ipv4_address(host: str, exc: socket.gaierror) -> str:
    """`bind_problem`'s words for a host `ipv4_address` found no address for (`exc`)."""
    return f"host {host!r} has no IPv4 address ({exc.strerror}); give one of this machine's"


def bind_problem(host: str, port: int, *, address: str | None = None) -> str | None:
    """None when a server can listen on host:port now (a port in TIME_WAIT counts as free);
    else why not, in words to follow `cannot serve on <host>:<port>: `. Our servers listen on
    IPv4 (`free_port`, the front and `mlflow models serve` are given an IPv4 host), so a host
    must resolve to an IPv4 address of this machine. `address`: `ipv4_address(host)`, when the
    caller has looked it up already (then `host` is not looked up again).

    Raises:
        TransientError: the name could not be looked up now (EAI_AGAIN: no DNS answer).
    """
    if address is None:
        try:
            address = ipv4_address(host)
        except socket.gaierror as exc:
            return no_ipv4_address(host, exc)
    with socket.socket() as sock:
        # Same option uvicorn binds with (uvicorn 0.54.0 uvicorn/config.py `Config.bind_socket`),
        # so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))  # what bind((host, port)) binds (`ipv4_address`)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "the port is in use by another process"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{host} is no address of this machine"
            return exc.strerror or str(exc)
        return None


def http_ok(url: str, timeout: float = 5.0) -> bool:
    """True if GET `url` answers 200 within `timeout` seconds; any failure is False."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until_healthy(
    url: str,
    *,
    timeout: float,
    proc: subprocess.Popen | None = None,
    log: str | Path | None = None,
    healthy: Callable[[str], bool] = http_ok,
) -> None:
    """Poll `url` until `healthy(url)` (default: answers 200), for at most `timeout` seconds.

    Args:
        url: the health endpoint, e.g. `http://127.0.0.1:5050/health`.
        timeout: seconds before giving up.
        proc: the server's process, if we started it: its exit ends the wait at once.
        log: the server's log file, named in the error.

    Raises:
        StepError: the process exited, or `url` was not healthy within `timeout` seconds.
    """
    see = f"; see {log}" if log else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StepError(f"server exited with code {proc.returncode}{see}")
        if healthy(url):
            return
        time.sleep(HEALTH_POLL_S)
    raise StepError(f"{url} did not answer 200 within {timeout:g}s{see}")


class Terminated(StepError):
    """SIGTERM arrived (Argo stopping the pod, `kill`, `timeout`) inside `sigterm_raises`."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Inside, SIGTERM raises `Terminated` where the main thread is, so the cleanup written for
    exceptions and Ctrl-C (`finally`, `except BaseException`) also runs for SIGTERM, whose
    default action ends the process at once. Later SIGTERMs are ignored until the block ends, so
    the cleanup itself is not cut short (SIGKILL still is)."""

    def raise_terminated(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated("stopped by SIGTERM")

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def pid_alive(pid: int) -> bool:
    """True if a process `pid` exists (ours or not); our own exited child is reaped first."""
    try:
        # Reap it first if it is our own exited child, otherwise a zombie looks alive.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def command_line(pid: int) -> list[str]:
    """The arguments `pid` runs with; empty if it does not exist.

    From /proc/<pid>/cmdline (exact arguments) where /proc exists, else from
    `ps -ww -o command= -p <pid>` (POSIX ps; macOS), split on white space.
    """
    cmdline = PROC / str(pid) / "cmdline"
    if PROC.is_dir():
        try:
            return cmdline.read_bytes().decode(errors="replace").split("\0")[:-1]
        except OSError:
            return []
    result = subprocess.run(
        ["ps", "-ww", "-o", "command=", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.split()


def all_pids() -> list[int]:
    """Every process ID on this machine: the numeric entries of /proc where there is one, else
    `ps -A -o pid=` (POSIX ps; macOS)."""
    if PROC.is_dir():
        return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]
    result = subprocess.run(["ps", "-A", "-o", "pid="], capture_output=True, text=True, check=False)
    return [int(word) for word in result.stdout.split() if word.isdigit()]


# pidfd_getfd(2) (Linux >= 5.6): a copy of another process's file descriptor. Its number is 438 on
# every architecture (the unified table, include/uapi/asm-generic/unistd.h; x86_64 too:
# arch/x86/entry/syscalls/syscall_64.tbl).
_SYS_PIDFD_GETFD = 438
_TCP_LISTEN = "0A"  # the st column of /proc/net/tcp (include/net/tcp_states.h: TCP_LISTEN = 10)


def take_listening_socket(pid: int, host: str, port: int) -> socket.socket | None:
    """A copy of the TCP socket listening on `host:port` that a process of the group led by
    `pid` holds (a server and its workers), or None where none can be had.

    The copy is the same socket, not a new one on the same port: while either copy is open the
    port keeps listening and connections wait in its queue, whichever process accepts them.
    None when: no process of the group listens there, not Linux, a kernel before 5.6 (no
    pidfd_getfd), or no ptrace access to that process (man 2 pidfd_getfd: PTRACE_MODE_ATTACH;
    Yama's ptrace_scope >= 1 refuses it for a process that is not our descendant, and container
    seccomp profiles may refuse the call).
    """
    import ctypes

    inodes = set()
    for table in ("tcp", "tcp6"):
        with suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == _TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes or not hasattr(os, "pidfd_open"):
        return None
    syscall = ctypes.CDLL(None, use_errno=True).syscall
    address = (ipv4_address(host), port)  # as getsockname says it: `localhost` is 127.0.0.1
    for member in all_pids():
        with suppress(OSError):
            if os.getpgid(member) != pid:
                continue
            for fd in (PROC / str(member) / "fd").iterdir():
                if os.readlink(fd) not in inodes:
                    continue
                pidfd = os.pidfd_open(member)
                try:
                    copy = syscall(_SYS_PIDFD_GETFD, pidfd, int(fd.name), 0)
                finally:
                    os.close(pidfd)
                if copy < 0:
                    return None  # not allowed here (see above): the same for every member
                sock = socket.socket(fileno=copy)
                if sock.getsockname()[:2] == address:
                    return sock
                sock.close()
    return None


def flag_values(argv: list[str]) -> dict[str, str]:
    """`{"--port": "5050", ...}`: each argument mapped to the one after it (a flag to its value)."""
    return {flag: argv[i + 1] for i, flag in enumerate(argv[:-1])}


def is_our_process(
    pid: int, words: Iterable[str] = (), flags: Mapping[str, str] | None = None
) -> bool:
    """True if `pid` is alive and its command line holds every one of `words` and every flag of
    `flags` followed by its value (e.g. `{"--port": "5050"}`).

    This is the identity check before a recorded PID is reused or signalled: after a reboot or a
    crash the same PID may belong to another program, which must never be adopted or stopped.
    """
    if not pid_alive(pid):
        return False
    argv = command_line(pid)
    values = flag_values(argv)
    return all(word in argv for word in words) and all(
        values.get(flag) == value for flag, value in (flags or {}).items()
    )


def stop_process_group(pid: int, timeout: float = STOP_GRACE_S, *, whole: bool = False) -> None:
    """SIGTERM the process group led by `pid` (a server and its workers), SIGKILL after
    `timeout` seconds; return once `pid` is gone, or with `whole` once every member of its group
    is (for a group whose leader died first: its workers would keep the port). A group that no
    longer exists is fine."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
            # A stopped process (SIGSTOP, a debugger) acts on SIGTERM only once continued; as
            # systemd does after its KillSignal (systemd.kill(5), SendSIGCONT=).
            os.killpg(pid, signal.SIGCONT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid) and not (whole and group_exists(pid)):
                return
            time.sleep(0.2)


def group_exists(pgid: int) -> bool:
    """True while a process group `pgid` has a member (its leader may be gone)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # members exist, owned by someone else
    return True


@contextmanager
def exclusive_lock(
    path: Path,
    timeout: float,
    say: Callable[[str], None],
    *,
    what: str,
    error: type[StepError] = TransientError,
) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if needed) while inside; wait up to `timeout`
    seconds for the process holding it, then refuse. The holder's PID is written into the file,
    so the refusal names it.

    A lock file that exists in a read-only directory is still locked (flock needs no write
    access), so a read-only state directory can still be worked on one process at a time.

    Args:
        path: the lock file, e.g. `<state-dir>/deploy.lock`.
        timeout: seconds to wait for another holder.
        say: told once, when this process starts waiting.
        what: the other holder in messages, e.g. `deploy`, `local run`.
        error: the StepError class of the refusal (default TransientError: exit 75, a later
            retry may pass).

    Raises:
        `error`: still held by another process after `timeout` seconds, naming its PID and `path`.
        OSError: `path` can neither be created nor opened.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = path.open("a+")
        writable = True
    except OSError:
        if not path.exists():
            raise
        handle = path.open("r")  # a read-only directory or file system: lock without a PID
        writable = False
    with handle:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                if time.monotonic() >= deadline:
                    raise error(
                        f"another {what} (pid {holder}) holds {path};"
                        f" waited {timeout:.0f}s, try again later"
                    ) from None
                if not told:
                    say(f"waiting up to {timeout:.0f}s for {what} pid {holder} ({path})")
                    told = True
                time.sleep(0.2)
        if writable:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        try:
            yield
        finally:
            if writable:
                handle.seek(0)
                handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def release_lock_path(tracking_uri: str, model_name: str) -> Path:
    """The lock file of one release (an MLflow tracking server and registered model), in a
    per-user directory every checkout shares: `$XDG_RUNTIME_DIR` (else the temp dir)
    `/dewpoint-pipeline-<uid>/release-<hash>.lock`. The tracking URI is compared without case in
    scheme and host, without a trailing slash, and with `localhost` as 127.0.0.1."""
    uri = urlsplit(tracking_uri.strip())
    host = (uri.hostname or "").lower()
    host = "127.0.0.1" if host == "localhost" else host
    port = url_port(uri)
    netloc = f"{host}:{port}" if port else host
    server = f"{uri.scheme.lower()}://{netloc}{uri.path.rstrip('/')}"
    digest = hashlib.sha256(f"{server}\n{model_name.strip()}".encode()).hexdigest()[:16]
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"dewpoint-pipeline-{os.getuid()}" / f"release-{digest}.lock"


@contextmanager
def release_lock(
    tracking_uri: str, model_name: str, timeout: float, say: Callable[[str], None]
) -> Iterator[None]:
    """Hold the release lock of `tracking_uri` + `model_name` (`release_lock_path`) while inside,
    as every local door does (the local runner for a whole run, the promote CLI for its gate);
    a no-op inside a local run that already holds it (RELEASE_LOCK_ENV).

    Raises:
        TransientError: another holder kept it past `timeout` seconds (exclusive_lock).
        OSError: the lock file can neither be created nor opened.
    """
    path = release_lock_path(tracking_uri, model_name)
    held = os.environ.get(RELEASE_LOCK_ENV)
    if held and Path(held).resolve() == path.resolve():
        yield
        return
    with exclusive_lock(path, timeout, say, what="promote or local run of this release"):
        yield
