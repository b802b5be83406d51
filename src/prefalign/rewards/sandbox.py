"""Run model-written Python against test cases, one fresh interpreter per program.

Xu et al. (2024, section 6) reward a program with 10 when it passes every test case of an APPS or
CodeContests problem; Chen et al. (2021) score HumanEval by running ``check(entry_point)``. This
module is the executor both use: :meth:`Sandbox.run_tests` runs one program against a test suite,
:meth:`Sandbox.run_many` runs many in parallel (a thread pool of subprocess launchers,
``max_workers`` at a time); a hung or crashing program costs its time limit and nothing more.

It runs two kinds of test suite (the formats of each data set are in :mod:`prefalign.rewards.code`):
*in-process* suites (:class:`InProcessSuite`: assert statements or function calls run after the
program, in its namespace, one process in all) and *stdio* suites (:class:`StdioSuite`: one
process per input; the parent judges the output, so the program never sees the expected one).

Layers of protection (:meth:`Sandbox.isolation` reports which are up here), outermost first:

1. **Bubblewrap** (where ``bwrap`` is installed and may create user namespaces; see
   :mod:`prefalign.rewards.sandbox_wall`): new user, PID, IPC, network, UTS and cgroup namespaces,
   ``--die-with-parent``; only ``/usr`` and the interpreter read-only, a private ``/proc`` and
   read-only ``/dev``, and one private tmpfs of ``max_disk_bytes`` at ``/tmp`` (working directory,
   home and temporary directory: the run's total disk cap). No home directory, ``/etc``, project or
   other checkout is visible; no host process can be signalled; no network exists.
2. **Process limits** (always): a new session, killed with ``os.killpg`` at the end; a wall-clock
   limit; ``RLIMIT_CPU`` (SIGXCPU, SIGKILL a second later); ``RLIMIT_AS`` (MemoryError);
   ``RLIMIT_FSIZE`` (each file and stdout/stderr); ``RLIMIT_NOFILE``; no core files. The interpreter
   runs with ``-I -S -B``: environment ignored, no site-packages, no bytecode written.
3. **A throw-away user id** (as root): every run gets a fresh uid (bubblewrap is started under it),
   so ``RLIMIT_NPROC`` counts only that program's processes (a fork bomb is contained this way),
   and ``kill -9 -1`` run as that uid at the end removes whatever it left. Without root,
   RLIMIT_NPROC is the user's task count plus ``max_processes`` (approximate).
4. **Without bubblewrap, as root** (``unshare``): a network namespace, and a mount namespace in which
   one tmpfs of ``max_disk_bytes`` covers ``/tmp`` and ``/dev/shm`` and is the working directory.
5. **An audit-hook guard** (PEP 578): refuses ``open`` outside the working directory (except
   reading the standard library), listing or changing files outside it, ``socket.*``, process
   creation, ``os.kill``, ``ctypes`` and ``resource.setrlimit`` with a PermissionError.

Verdicts are lines on stdout carrying a random nonce the program is not given, so exiting early or
printing "passed" cannot fake a pass. Test code compares by value: before it is sent, every value it
compares or computes with is reduced inside the child to plain built-in data
(:mod:`prefalign.rewards.sandbox_compare`), so an object whose ``__eq__`` always answers True, or
whose ``__sub__`` returns 0, fails with a detail naming its type; the tests see the builtins as they
were before the program ran.

What it does NOT protect against (tests/rewards/test_sandbox_attacks.py has one program per class):
the audit hook is Python-level (``_posixsubprocess``, memory corruption get past it): with
bubblewrap the wall still holds; without it, world-readable files (the project's sources too) are
readable and other processes visible, and without root ``/tmp`` and ``/dev/shm`` are writable, disk
use is capped per file only, and there is neither uid nor network isolation. Assert tests run in
the program's own interpreter, so a program that walks its frames can reach the harness's verdict
writer and forge a pass, or patch the standard library the tests import; only a process it never
controlled could judge it. Memory is capped as address space (plus the tmpfs); a program may keep
``max_processes`` cores busy until its limits. The interpreter is the running one when an
unprivileged uid can read it and bubblewrap can mount it, else the system ``python3``;
``int``/``str`` conversion is unlimited, as in judges.
"""

from __future__ import annotations

import marshal
import math
import os
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prefalign.rewards.sandbox_compare import compare_by_value
from prefalign.rewards.sandbox_isolation import (
    _next_uid,
    _remove_tree,
    _user_task_count,
    _wait_exit,
    kill_uid,
    private_tmp_argv,
    probe_isolation,
)
from prefalign.rewards.sandbox_wall import WORKDIR, wall_argv

STATUSES = ("passed", "failed", "timeout", "error", "memory")
_MEMORY_EXIT = 86  # the harness exits with this code after a MemoryError


# The child's entry point: a template file beside this one (see its docstring).
HARNESS = (Path(__file__).with_name("sandbox_harness.py")).read_text().replace("MEMORY_EXIT", str(_MEMORY_EXIT))


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation switches; every limit applies to each process the sandbox starts."""

    timeout: float = 10.0
    """Wall-clock seconds per process (per program for assert/call suites, per input for stdio)."""
    cpu_time: float | None = None
    """CPU seconds per process (RLIMIT_CPU, rounded up); None: the wall-clock ``timeout``."""
    memory_bytes: int = 1 << 30
    """Address-space limit (RLIMIT_AS) per process."""
    max_processes: int = 8
    """Processes and threads the program may have at once (RLIMIT_NPROC on its throw-away uid)."""
    max_output_bytes: int = 8 << 20
    """Largest stdout, stderr or written file (RLIMIT_FSIZE); beyond it the program is killed."""
    max_disk_bytes: int = 64 << 20
    """Total bytes a run may write, all files together: the size of its private tmpfs (bubblewrap, or root)."""
    max_open_files: int = 64
    tail_chars: int = 2000
    """Characters of stdout and stderr kept in a result."""
    max_workers: int | None = None
    """Programs run at once by ``run_many``; None: the number of CPU cores."""
    stop_at_first_failure: bool = True
    """Stop a suite at its first failing test (the reward only needs all-or-nothing)."""
    drop_privileges: bool = True
    """As root, run each program under a fresh unprivileged uid (see the module docstring)."""
    network_namespace: bool = True
    """As root, run each program in an empty network namespace (``unshare --net``)."""
    audit_guard: bool = True
    """Install the audit-hook guard; switch off only to test the OS layers on their own."""
    bubblewrap: bool = True
    """Run each program inside bubblewrap (``bwrap``) where it is installed and works (see sandbox_wall)."""
    python: str | None = None
    """Interpreter for the programs; None: this one, or ``python3`` if a dropped uid cannot read it."""
    tmp_dir: str | None = None
    """Where working directories are made; None: the system default."""


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of one program against one test suite.

    ``status``: ``passed`` (every test passed), ``failed`` (a test gave a wrong answer), ``timeout``
    (wall-clock or CPU limit), ``error`` (did not compile, raised, was refused by the guard, or was
    killed by a signal), ``memory`` (hit the memory limit). ``elapsed`` and ``cpu_time`` are summed
    over the processes run; ``detail`` says which test and why.
    """

    status: str
    tests_passed: int
    tests_total: int
    elapsed: float
    cpu_time: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    detail: str = ""
    returncode: int | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class InProcessSuite(Protocol):
    """Tests run in the program's process after it: ``(label, source, is_test)`` stages."""

    def stages(self) -> list[tuple[str, str, bool]]: ...


class StdioSuite(Protocol):
    """Tests that run the program once per input; ``output_ok`` judges its stdout."""

    inputs: tuple[str, ...]

    def output_ok(self, index: int, stdout: str) -> bool: ...


@dataclass(frozen=True)
class _Process:
    returncode: int
    timed_out: bool
    elapsed: float
    cpu_time: float
    stdout: bytes
    stderr: bytes


class Sandbox:
    """Runs programs against test suites under the limits of a :class:`SandboxConfig`."""

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        c = self.config
        self._isolation = probe_isolation(c.python, c.drop_privileges, c.network_namespace, c.audit_guard, c.bubblewrap)

    def isolation(self) -> dict[str, Any]:
        """Which protection layers are active on this machine."""
        return self._isolation.describe()

    def run_many(self, items: Sequence[tuple[str, InProcessSuite | StdioSuite]]) -> list[ExecutionResult]:
        """``run_tests`` on every ``(program, suite)``, ``max_workers`` at a time, results in order."""
        workers = min(self.config.max_workers or os.cpu_count() or 1, max(1, len(items)))
        if workers == 1:
            return [self.run_tests(program, suite) for program, suite in items]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
            return list(pool.map(lambda item: self.run_tests(*item), items))

    def run_tests(self, program: str, suite: InProcessSuite | StdioSuite) -> ExecutionResult:
        """Run ``program`` against ``suite`` (in one process, or once per stdin input)."""
        stages = suite.stages() if hasattr(suite, "stages") else None
        if not (any(stage[2] for stage in stages) if stages is not None else suite.inputs):
            raise ValueError(f"{type(suite).__name__} holds no test: any program would pass it")
        return self._run_in_process(program, stages) if stages is not None else self._run_stdio(program, suite)

    # -- the two ways of running tests -------------------------------------------------------

    def _run_in_process(self, program: str, test_stages: list[tuple[str, str, bool]]) -> ExecutionResult:
        tests = [(label, compare_by_value(source), is_test) for label, source, is_test in test_stages]
        stages = [("solution.py", program, False)] + tests
        nonce = secrets.token_hex(16)
        proc = self._spawn(program, stages, nonce, None)
        marks, stdout = _parse_marks(proc.stdout, nonce)
        total = sum(1 for stage in stages if stage[2])
        passed = sum(1 for kind, index, _ in marks if kind == "ok" and stages[index][2])
        status, detail = self._limit_status(proc) or ("passed", "")
        if status == "passed":
            bad = next(((k, i, s) for k, i, s in marks if k in ("fail", "error")), None)
            if bad is not None:
                status, detail = ("failed" if bad[0] == "fail" else "error"), f"{stages[bad[1]][0]}: {bad[2]}"
            elif not marks or marks[-1][0] != "done" or passed != total:
                ended = f"exited with code {proc.returncode} before the tests finished"
                status, detail = "error", ended + _last_line(proc.stderr)
        return self._result(status, passed, total, [proc], detail, stdout)

    def _run_stdio(self, program: str, suite: StdioSuite) -> ExecutionResult:
        procs: list[_Process] = []
        passed, outcome = 0, None
        for index, text in enumerate(suite.inputs):
            proc = self._spawn(program, [("solution.py", program, False)], None, text)
            procs.append(proc)
            verdict = self._limit_status(proc)
            if verdict is None and proc.returncode != 0:
                verdict = ("error", f"exited with code {proc.returncode}{_last_line(proc.stderr)}")
            if verdict is None and not suite.output_ok(index, proc.stdout.decode("utf-8", "replace")):
                verdict = ("failed", "wrong answer")
            if verdict is None:
                passed += 1
                continue
            outcome = outcome or (verdict[0], f"input {index + 1}: {verdict[1]}", proc)
            if self.config.stop_at_first_failure:
                break
        status, detail, shown = outcome or ("passed", "", procs[-1] if procs else None)
        return self._result(status, passed, len(suite.inputs), procs, detail, shown.stdout if shown else b"", shown)

    def _limit_status(self, proc: _Process) -> tuple[str, str] | None:
        """A verdict from how the process ended, when a limit or a signal ended it."""
        c = self.config
        cpu_limit = math.ceil(c.cpu_time or c.timeout)
        if proc.timed_out:
            return "timeout", f"wall-clock limit of {c.timeout:g} s"
        if proc.returncode == -signal.SIGXCPU or (proc.returncode == -signal.SIGKILL and proc.cpu_time >= cpu_limit):
            return "timeout", f"CPU time limit of {cpu_limit} s"
        if proc.returncode == _MEMORY_EXIT:
            return "memory", f"memory limit of {c.memory_bytes} bytes"
        if proc.returncode == -signal.SIGXFSZ:
            return "error", f"output or file larger than {c.max_output_bytes} bytes"
        if proc.returncode < 0:
            try:
                return "error", f"killed by {signal.Signals(-proc.returncode).name}"
            except ValueError:
                return "error", f"killed by signal {-proc.returncode}"
        return None

    def _result(self, status, passed, total, procs, detail, stdout, shown=None) -> ExecutionResult:
        tail = self.config.tail_chars
        shown = shown or (procs[-1] if procs else None)
        return ExecutionResult(
            status=status,
            tests_passed=passed,
            tests_total=total,
            elapsed=sum(p.elapsed for p in procs),
            cpu_time=sum(p.cpu_time for p in procs),
            stdout_tail=stdout.decode("utf-8", "replace")[-tail:],
            stderr_tail=shown.stderr.decode("utf-8", "replace")[-tail:] if shown else "",
            detail=detail,
            returncode=shown.returncode if shown else None,
        )

    # -- one process -------------------------------------------------------------------------

    def _limits(self, uid: int | None) -> list[tuple[str, int, int]]:
        c = self.config
        cpu = math.ceil(c.cpu_time or c.timeout)
        nproc = c.max_processes if uid is not None else _user_task_count() + c.max_processes
        if self._isolation.bwrap:
            nproc += 2  # bwrap's monitor and the namespace's init run under the same uid
        return [
            ("RLIMIT_CPU", cpu, cpu + 1),
            ("RLIMIT_AS", c.memory_bytes, c.memory_bytes),
            ("RLIMIT_FSIZE", c.max_output_bytes, c.max_output_bytes),
            ("RLIMIT_NOFILE", c.max_open_files, c.max_open_files),
            ("RLIMIT_NPROC", nproc, nproc),
            ("RLIMIT_CORE", 0, 0),
        ]

    def _spawn(self, program: str, stages: list, nonce: str | None, stdin_text: str | None) -> _Process:
        iso, c = self._isolation, self.config
        uid = _next_uid() if iso.uid_switch else None
        control = tempfile.mkdtemp(prefix="prefalign-control-", dir=c.tmp_dir)
        # inside bubblewrap (or the fallback's private /tmp) the working directory is a private
        # tmpfs, which the harness fills
        private = bool(iso.bwrap or iso.private_tmp)
        workdir = WORKDIR if private else tempfile.mkdtemp(prefix="prefalign-run-", dir=c.tmp_dir)
        try:
            if not private:
                with open(os.path.join(workdir, "solution.py"), "w", encoding="utf-8") as fh:
                    fh.write(program)
                if uid is not None:
                    os.chown(workdir, uid, uid)
            job = {
                "limits": self._limits(uid),
                "uid": None if iso.bwrap else uid,  # bwrap itself is started under the uid
                "write_program": private,
                "guard": iso.audit_guard,
                "workdir": workdir,
                "read_roots": list(iso.read_roots),
                "nonce": nonce,
                "stages": [tuple(s) for s in stages],
                "stop_at_first_failure": c.stop_at_first_failure,
            }
            job_path = os.path.join(control, "job")
            with open(job_path, "wb") as fh:
                marshal.dump(job, fh)
            with open(job_path, "rb") as job_file, open(os.path.join(control, "stdin"), "w+b") as fin:
                fin.write((stdin_text or "").encode("utf-8"))
                fin.seek(0)
                return self._launch(job_file, workdir, uid, fin)
        finally:
            if not private:
                _remove_tree(workdir)
            _remove_tree(control)

    def _launch(self, job_file, workdir: str, uid: int | None, stdin) -> _Process:
        """Start the harness on the open ``job_file`` (passed as a file descriptor, so that the
        program, under another uid or inside bubblewrap, never needs to open it)."""
        iso, c = self._isolation, self.config
        job_fd = job_file.fileno()
        if iso.bwrap:
            argv = wall_argv(iso.bwrap, iso.python, c.max_disk_bytes)
        elif iso.private_tmp:
            argv = private_tmp_argv(iso.unshare, c.max_disk_bytes, 0 if uid is None else uid)
        else:
            argv = [iso.unshare, "--net", "--"] if iso.unshare else []
        argv += [iso.python, "-I", "-S", "-B", "-c", HARNESS, str(job_fd)]
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        # bwrap drops its own privileges: it starts under the throw-away uid, in an unprivileged user namespace
        ids = {"user": uid, "group": uid, "extra_groups": []} if iso.bwrap and uid is not None else {}
        control = os.path.dirname(job_file.name)
        with open(os.path.join(control, "stdout"), "w+b") as out, open(os.path.join(control, "stderr"), "w+b") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=out,
                stderr=err,
                cwd="/" if workdir == WORKDIR else workdir,
                env=env,
                start_new_session=True,
                pass_fds=(job_fd,),
                **ids,
            )
            finished = _wait_exit(proc.pid, c.timeout)
            try:  # the whole session, before reaping, so that its group id cannot have been reused
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            if uid is not None:
                kill_uid(uid, iso.python)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if iso.bwrap and 128 < proc.returncode < 128 + 65:  # bwrap reports a signal as 128 + its number
                proc.returncode = 128 - proc.returncode
            elapsed = time.perf_counter() - start
            out.seek(0)
            err.seek(0)
            cpu = usage.ru_utime + usage.ru_stime
            return _Process(proc.returncode, not finished, elapsed, cpu, out.read(), err.read())


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return f": {lines[-1][:300]}" if lines else ""


def _parse_marks(stdout: bytes, nonce: str) -> tuple[list[tuple[str, int, str]], bytes]:
    """The harness's verdict lines ``\\n nonce<TAB>kind<TAB>stage index<TAB>summary`` and the
    program's own output (without them and the line break put before each)."""
    marks, kept = [], []
    for line in stdout.split(b"\n"):
        fields = line.decode("utf-8", "replace").split("\t", 3)
        if len(fields) == 4 and fields[0] == nonce and fields[2].isdigit():
            marks.append((fields[1], int(fields[2]), fields[3]))
            if kept and kept[-1] == b"":
                kept.pop()
        else:
            kept.append(line)
    return marks, b"\n".join(kept)
