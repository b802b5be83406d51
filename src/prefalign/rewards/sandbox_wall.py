"""Bubblewrap (``bwrap``) as the sandbox's outer wall: the command line, and a probe of whether it
runs here.

Each program runs in ``bwrap`` with new user, PID, IPC, network, UTS and cgroup namespaces,
``--die-with-parent`` and ``--new-session``; the file system it sees is ``/usr`` (and the
``/bin``, ``/lib*``, ``/sbin`` links or directories beside it) and the interpreter's prefix, both
read-only, a private ``/proc`` and ``/dev`` (read-only), and one empty ``tmpfs`` of
``max_disk_bytes`` at ``/tmp``, which is its working directory, home and temporary directory and the
only place it can write: that size is the run's total disk cap. Nothing of ``/root``, ``/home``,
``/etc``, the project or any other checkout is there. As root, ``bwrap`` runs under the run's
throw-away uid (an unprivileged user namespace), so the uid layer keeps working inside the wall.

Where ``bwrap`` is missing, older than 0.8 (``--size``, ``--disable-userns``) or cannot start
(containers often forbid user namespaces), the probe says why and the sandbox keeps its other
layers; :meth:`Sandbox.isolation` reports both.
"""

from __future__ import annotations

import os
import shutil
import subprocess

# How it is installed, for the message when it is missing.
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
WORKDIR = "/tmp"  # inside the wall: the capped tmpfs


def _root_entries() -> list[str]:
    """``bwrap`` arguments for ``/usr`` and the top-level links or directories of a merged or
    split ``/usr`` (``/bin``, ``/sbin``, ``/lib``, ``/lib32``, ``/lib64``, ``/libx32``)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + name
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _prefix_of(python: str) -> str | None:
    """The directory to bind for an interpreter outside ``/usr`` (its installation prefix), or
    None when ``/usr`` holds it."""
    real = os.path.realpath(python)
    if real.startswith("/usr/"):
        return None
    return os.path.dirname(os.path.dirname(real))


def wall_argv(bwrap: str, python: str, max_disk_bytes: int) -> list[str]:
    """The ``bwrap`` command line that the interpreter's argv follows."""
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"]
    argv += _root_entries()
    prefix = _prefix_of(python)
    if prefix is not None:
        argv += ["--ro-bind", prefix, prefix]
    argv += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"]
    argv += ["--size", str(max_disk_bytes), "--perms", "0700", "--tmpfs", WORKDIR, "--remount-ro", "/"]
    return argv + ["--chdir", WORKDIR, "--"]


def _forbidden_prefix(python: str) -> str | None:
    """Why an interpreter cannot go inside the wall: its prefix would bring a home directory or
    this checkout with it."""
    prefix = _prefix_of(python)
    if prefix is None:
        return None
    here = os.path.realpath(__file__)
    homes = ("/root", "/home")
    if prefix in ("/", "") or here.startswith(prefix.rstrip("/") + "/"):
        return f"the interpreter's prefix {prefix} holds the project itself"
    if any(prefix == h or prefix.startswith(h + "/") for h in homes):
        return f"the interpreter's prefix {prefix} is in a home directory"
    return None


def probe_wall(python: str, uid: int | None, max_disk_bytes: int = 1 << 20) -> tuple[str | None, str]:
    """``(bwrap path, "")`` if a program can run inside the wall here (as ``uid`` when given),
    else ``(None, why not)``."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, f"bwrap is not installed ({INSTALL_HINT})"
    forbidden = _forbidden_prefix(python)
    if forbidden is not None:
        return None, forbidden
    probe = "import os; open('probe', 'w').write('x'); print(os.getcwd(), os.path.exists('/root'))"
    argv = wall_argv(bwrap, python, max_disk_bytes) + [python, "-I", "-S", "-B", "-c", probe]
    ids = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
    try:
        done = subprocess.run(argv, capture_output=True, timeout=60, cwd="/", text=True, **ids)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{bwrap} did not start: {exc}"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return None, f"{bwrap} failed (exit {done.returncode}): {lines[-1] if lines else 'no message'}"
    if done.stdout.split() != [WORKDIR, "False"]:
        return None, f"{bwrap} ran, but the sandbox saw {done.stdout.strip()!r}"
    return bwrap, ""
