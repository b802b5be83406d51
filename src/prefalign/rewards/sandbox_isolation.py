"""OS-level isolation for the sandbox: which layers this machine allows, throw-away uids, and the
root helper that kills every process of a uid. See :mod:`prefalign.rewards.sandbox` for what each
layer protects against.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import json
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from prefalign.rewards.sandbox_wall import probe_wall

_UID_BASE = 1_000_000  # throw-away uids: base + (pid mod 2**20) * 1024 + run counter mod 1024
_RUN_COUNTER = itertools.count()


@dataclass(frozen=True)
class Isolation:
    """What this machine allows (see the module docstring for what each layer does)."""

    python: str
    read_roots: tuple[str, ...]
    uid_switch: bool
    unshare: str | None
    audit_guard: bool
    bwrap: str | None = None
    bwrap_unavailable: str = ""
    private_tmp: bool = False
    """Without bubblewrap, as root: ``unshare --mount`` and a capped tmpfs on /tmp and /dev/shm."""

    def describe(self) -> dict[str, Any]:
        return {
            "python": self.python,
            "bubblewrap": self.bwrap is not None,
            "bubblewrap_unavailable": self.bwrap_unavailable,
            "throwaway_uid_and_nproc": self.uid_switch,
            "network_namespace": self.bwrap is not None or self.unshare is not None,
            "pid_namespace_and_private_filesystem": self.bwrap is not None,
            "private_tmp_and_total_disk_cap": self.bwrap is not None or self.private_tmp,
            "audit_guard": self.audit_guard,
            "rlimits_and_session_kill": True,
        }


_PROBE = "import json, os, sys; print(json.dumps([os.path.realpath(p) for p in sys.path if p]))"


def _probe_python(python: str, uid: int | None) -> tuple[str, ...] | None:
    """The interpreter's import roots if it runs (under ``uid``), else None."""
    ids = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
    try:
        done = subprocess.run([python, "-I", "-S", "-B", "-c", _PROBE], capture_output=True, timeout=60, cwd="/", **ids)
    except (OSError, subprocess.SubprocessError):
        return None
    return tuple(json.loads(done.stdout)) if done.returncode == 0 else None


@functools.cache
def probe_isolation(
    python: str | None, drop_privileges: bool, network_namespace: bool, audit_guard: bool, bubblewrap: bool = True
) -> Isolation:
    """Find which layers work here (cached, so once per process and setting): a dropped uid must be
    able to start the interpreter (``/root`` is often unreadable to it, hence the fallback to the
    system ``python3``), and bubblewrap must start it inside its wall."""
    root = os.geteuid() == 0
    system_python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    candidates = [c for c in ([python] if python else [os.path.realpath(sys.executable), system_python]) if c]
    chosen: tuple[str, tuple[str, ...], bool] | None = None
    if root and drop_privileges:
        for candidate in candidates:
            roots = _probe_python(candidate, _UID_BASE - 1)
            if roots is not None:
                chosen = (candidate, roots, True)
                break
    if chosen is None:
        roots = _probe_python(candidates[0], None)
        if roots is None:
            raise RuntimeError(f"sandbox interpreter {candidates[0]!r} does not start")
        chosen = (candidates[0], roots, False)
    bwrap, why_not = None, "switched off (SandboxConfig.bubblewrap=False)"
    if bubblewrap:
        probe_uid = _UID_BASE - 1 if chosen[2] else None
        bwrap, why_not = probe_wall(chosen[0], probe_uid)
        if bwrap is None and not python and system_python and system_python != chosen[0]:
            roots = _probe_python(system_python, probe_uid)  # e.g. the running one lives in a home directory
            second = probe_wall(system_python, probe_uid) if roots is not None else (None, why_not)
            if second[0] is not None:
                chosen, (bwrap, why_not) = (system_python, roots, chosen[2]), second
    if bwrap is not None:
        return Isolation(chosen[0], chosen[1], chosen[2], None, audit_guard, bwrap)
    unshare = shutil.which("unshare") if root and network_namespace else None
    if unshare and subprocess.run([unshare, "--net", "--", "true"], capture_output=True).returncode != 0:
        unshare = None
    private = unshare is not None and _run_ok(private_tmp_argv(unshare, 1 << 20, 0) + ["true"])
    return Isolation(chosen[0], chosen[1], chosen[2], unshare, audit_guard, None, why_not, private)


def _run_ok(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=60, cwd="/").returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def private_tmp_argv(unshare: str, max_disk_bytes: int, uid: int) -> list[str]:
    """The fallback's private, capped ``/tmp``: a new mount and network namespace in which a tmpfs
    of ``max_disk_bytes`` owned by ``uid`` covers ``/tmp`` (and, bound, ``/dev/shm``); the command
    that follows runs there, in ``/tmp``."""
    mount = f"mount -t tmpfs -o size={max_disk_bytes},mode=0700,uid={uid},gid={uid} prefalign /tmp"
    script = f'{mount} && mount --bind /tmp /dev/shm && cd /tmp && exec "$@"'
    return [unshare, "--net", "--mount", "--", shutil.which("sh") or "/bin/sh", "-c", script, "sh"]


def _next_uid() -> int:
    """A uid no other run is using: distinct per process (pid) and per run (counter)."""
    return _UID_BASE + (os.getpid() % (1 << 20)) * 1024 + next(_RUN_COUNTER) % 1024


# A small root process that kills every process of a uid on request: it forks itself (cheap, unlike
# forking this process, which may hold a whole model), drops to the uid and calls kill(-1, SIGKILL),
# which reaches every process of that uid and nothing else.
_SWEEPER = r"""
import os, sys
for line in sys.stdin:
    uid = int(line)
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([]); os.setgid(uid); os.setuid(uid); os.kill(-1, 9)
        except OSError:
            pass
        os._exit(0)
    os.waitpid(pid, 0)
    sys.stdout.write("swept\n")
    sys.stdout.flush()
"""
_sweeper_lock = threading.Lock()
_sweeper: list[subprocess.Popen] = []


def kill_uid(uid: int, python: str = sys.executable) -> None:
    """Kill every process of ``uid`` (as root): ``kill(-1, SIGKILL)`` run under that uid."""
    with _sweeper_lock:
        if not _sweeper or _sweeper[0].poll() is not None:
            argv = [python, "-I", "-S", "-B", "-c", _SWEEPER]
            _sweeper[:] = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")]
        sweeper = _sweeper[0]
        sweeper.stdin.write(f"{uid}\n")
        sweeper.stdin.flush()
        if sweeper.stdout.readline() != "swept\n":
            raise RuntimeError(f"the process sweeper died while killing the processes of uid {uid}")


@atexit.register
def _stop_sweeper() -> None:
    with _sweeper_lock:
        for sweeper in _sweeper:
            sweeper.stdin.close()
            sweeper.wait(timeout=10)
            sweeper.stdout.close()
        _sweeper.clear()


def _user_task_count() -> int:
    """Tasks (processes and threads) of this user, which non-root RLIMIT_NPROC counts."""
    uid, count = os.getuid(), 0
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid:
                count += len(os.listdir(f"/proc/{name}/task"))
        except OSError:
            continue
    return count


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` exits (without reaping it); False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(max(0, int(timeout * 1000))))
        finally:
            os.close(fd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.002)
    return False


def _remove_tree(path: str) -> None:
    def make_writable(func, target, _exc):
        os.chmod(os.path.dirname(target), 0o700)
        func(target)

    shutil.rmtree(path, onerror=make_writable)
