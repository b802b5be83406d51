"""The sandbox contains hostile programs (each layer on its own where the machine allows it), and
the next program still runs; verdicts cannot be faked by exiting early. The OS-layer tests run with
bubblewrap and without it (the fallback layers); tests/rewards/test_sandbox_attacks.py holds one
program per class of attack the module docstring names."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

import prefalign
from prefalign.rewards import sandbox_wall
from prefalign.rewards.code import AssertTests, StdioTests
from prefalign.rewards.sandbox import ExecutionResult, Sandbox, SandboxConfig
from prefalign.rewards.sandbox_isolation import _UID_BASE, private_tmp_argv, probe_isolation

FAST = dict(timeout=1.0, memory_bytes=256 << 20, max_output_bytes=1 << 20, max_workers=2)
TRIVIAL = ("def f(x):\n    return x + 1\n", AssertTests(("assert f(1) == 2",)))
PROJECT_SRC = Path(prefalign.__file__).resolve().parent


def without_bubblewrap(box: Sandbox) -> None:
    """Skip (or, in CI, where PREFALIGN_REQUIRE_BUBBLEWRAP=1, fail) with the probe's reason."""
    why = f"bubblewrap unavailable here: {box.isolation()['bubblewrap_unavailable']}"
    if os.environ.get("PREFALIGN_REQUIRE_BUBBLEWRAP") == "1":
        pytest.fail(why + " (PREFALIGN_REQUIRE_BUBBLEWRAP=1)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(SandboxConfig(**FAST))


@pytest.fixture(scope="module", params=["bwrap", "no_bwrap"])
def unguarded(request) -> Sandbox:
    """The OS layers alone (no audit hook), with bubblewrap and without it (where a throw-away uid
    is used, the fallback's main layer)."""
    box = Sandbox(SandboxConfig(**FAST, audit_guard=False, bubblewrap=request.param == "bwrap"))
    iso = box.isolation()
    if request.param == "bwrap" and not iso["bubblewrap"]:
        without_bubblewrap(box)
    if request.param == "no_bwrap" and not iso["throwaway_uid_and_nproc"]:
        pytest.skip("no throw-away uid here (not root, or no interpreter readable by another uid)")
    return box


def walled(box: Sandbox) -> bool:
    return box.isolation()["bubblewrap"]


def project_hidden_by_private_tmp(box: Sandbox) -> bool:
    """A checkout under /tmp (a CI clone, say) is inside the run's own private /tmp, where it does not exist:
    the program gets FileNotFoundError there, before any guard or uid is asked."""
    private = box.isolation()["private_tmp_and_total_disk_cap"]
    return private and (PROJECT_SRC == Path("/tmp") or Path("/tmp") in PROJECT_SRC.parents)


def run(box: Sandbox, program: str, tests: tuple[str, ...] = ("assert True",)) -> ExecutionResult:
    result = box.run_tests(program, AssertTests(tests))
    follow_up = box.run_tests(*TRIVIAL)
    assert follow_up.status == "passed", f"the next program failed after {program!r}: {follow_up}"
    return result


def sandbox_uid_processes(settle: float = 3.0) -> list[int]:
    """Live (non-zombie) processes under any throw-away uid of this test process, after giving
    killed ones ``settle`` seconds to die."""
    low = _UID_BASE + (os.getpid() % (1 << 20)) * 1024
    deadline = time.monotonic() + settle
    while True:
        left = []
        for name in os.listdir("/proc"):
            try:
                with open(f"/proc/{name}/status") as fh:
                    fields = dict(line.split(":", 1) for line in fh if ":" in line)
            except OSError:
                continue
            uid = int(fields.get("Uid", "0").split()[0])
            if low <= uid < low + 1024 and not fields.get("State", "").strip().startswith("Z"):
                left.append(int(name))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def test_passing_failing_and_erroring_programs(sandbox):
    assert sandbox.run_tests(*TRIVIAL).status == "passed"
    wrong = sandbox.run_tests("def f(x):\n    return x\n", AssertTests(("assert f(1) == 1", "assert f(1) == 2")))
    assert (wrong.status, wrong.tests_passed, wrong.tests_total) == ("failed", 1, 2)
    assert "<test 2>" in wrong.detail and "AssertionError" in wrong.stderr_tail
    broken = sandbox.run_tests("def f(x) return x\n", AssertTests(("assert f(1) == 2",)))
    assert broken.status == "error" and "SyntaxError" in broken.detail


@pytest.mark.parametrize(
    "program",
    ["import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "print('passed')\nprint('done')\n", "exit()\n"],
)
def test_exiting_early_or_printing_does_not_fake_a_pass(sandbox, program):
    assert (
        sandbox.run_tests(program + "def f(x):\n    return x\n", AssertTests(("assert f(1) == 2",))).status != "passed"
    )


def test_infinite_loop_times_out_on_wall_clock(sandbox):
    start = time.perf_counter()
    result = run(sandbox, "while True:\n    pass\n")
    assert result.status == "timeout"
    assert time.perf_counter() - start < 10


def test_sleeping_program_times_out(sandbox):
    assert run(sandbox, "import time\ntime.sleep(60)\n").status == "timeout"


def test_cpu_limit_applies_before_the_wall_clock():
    box = Sandbox(SandboxConfig(timeout=30.0, cpu_time=1.0))
    result = box.run_tests("while True:\n    pass\n", AssertTests(("assert True",)))
    assert result.status == "timeout" and "CPU" in result.detail


@pytest.mark.parametrize(
    "program", ["x = bytearray(2 * 1024 ** 3)\n", "chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 7))\n"]
)
def test_memory_hog_is_stopped(program):
    box = Sandbox(SandboxConfig(**{**FAST, "timeout": 10.0}))  # filling 256 MB takes a while on a loaded machine
    result = run(box, program)
    assert result.status == "memory", result


def test_output_flood_is_capped(sandbox):
    result = run(sandbox, "while True:\n    print('x' * 10000)\n")
    assert result.status == "error" and "larger than" in result.detail


@pytest.mark.parametrize(
    "program",
    [
        "open('/etc/passwd').read()\n",
        f"open({str(PROJECT_SRC / '__init__.py')!r}).read()\n",
        "import os\nos.listdir('/')\n",
        "import os\nos.listdir('/root')\n",
        "import os\nos.remove('/usr/nothing-to-remove-here')\n",
    ],
)
def test_guard_refuses_files_outside_the_working_directory(sandbox, program):
    result = run(sandbox, program)
    hidden = str(PROJECT_SRC) in program and project_hidden_by_private_tmp(sandbox)
    wanted = "FileNotFoundError" if hidden else "sandbox refused"
    assert result.status == "error" and wanted in result.detail, result


def test_writing_into_the_project_is_refused_by_guard_and_by_uid(sandbox, unguarded):
    target = PROJECT_SRC / "sandbox_escape_probe.txt"
    program = f"open({str(target)!r}, 'w').write('escaped')\n"
    try:
        for box in (sandbox, unguarded):
            result = run(box, program)
            # refused by the guard or the uid; inside bubblewrap the project is not even there
            guarded = box is sandbox
            hidden = (walled(box) and not guarded) or project_hidden_by_private_tmp(box)
            wanted = "FileNotFoundError" if hidden else "PermissionError"
            assert result.status == "error" and wanted in result.detail, result
            assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


def test_home_directory_is_unreadable_without_the_guard(unguarded):
    result = run(unguarded, "import os\nos.listdir('/root')\n")
    wanted = "FileNotFoundError" if walled(unguarded) else "PermissionError"  # absent inside bubblewrap
    assert result.status == "error" and wanted in result.detail, result


def test_working_directory_is_private_home_and_deleted():
    box = Sandbox(SandboxConfig(**FAST))
    program = "import os\nopen('scratch.txt', 'w').write('x')\nprint(os.getcwd())\nprint(os.environ['HOME'])\n"
    result = box.run_tests(program, StdioTests(("",), ("",)))
    cwd, home = result.stdout_tail.split()
    assert cwd == home
    if walled(box):  # its own tmpfs, gone with its mount namespace; nothing of it on the host
        assert cwd == "/tmp" and not any(Path("/tmp").glob("prefalign-run-*/scratch.txt"))
    else:
        assert not os.path.exists(cwd)


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    yield server
    server.close()


def test_network_is_refused_by_guard_and_by_namespace(sandbox, unguarded, listener):
    port = listener.getsockname()[1]
    program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
    boxes = [sandbox] + ([unguarded] if unguarded.isolation()["network_namespace"] else [])
    for box in boxes:
        result = run(box, program)
        assert result.status == "error", result
        with pytest.raises(socket.timeout):
            listener.accept()


@pytest.mark.parametrize(
    "program",
    [
        "import os\nos.kill(os.getppid(), 9)\n",
        "import os\nos.killpg(os.getpgid(os.getppid()), 9)\n",
    ],
)
def test_killing_the_parent_is_refused(sandbox, unguarded, program):
    assert run(sandbox, program).status == "error"
    result = run(unguarded, program)  # we are still alive, and run() checked the next program
    # inside bubblewrap the parent it sees is the PID namespace's init, which ignores the signal
    assert result.status == "error" or walled(unguarded), result


def test_fork_is_refused_by_the_guard(sandbox):
    result = run(sandbox, "import os\nos.fork()\n")
    assert result.status == "error" and "os.fork" in result.detail


def test_fork_bomb_is_contained_and_swept(unguarded):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.perf_counter()
    result = run(unguarded, bomb)
    assert result.status in ("timeout", "error")
    assert time.perf_counter() - start < 15
    assert sandbox_uid_processes() == []


def test_processes_that_leave_the_session_are_swept(unguarded):
    escapee = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')\n"
    result = unguarded.run_tests(escapee, StdioTests(("",), ("parent done",)))
    assert result.status == "passed"
    assert sandbox_uid_processes() == []


def test_without_a_throwaway_uid_limits_and_guard_still_hold():
    box = Sandbox(SandboxConfig(**FAST, drop_privileges=False, network_namespace=False))
    assert not box.isolation()["throwaway_uid_and_nproc"]
    assert box.run_tests(*TRIVIAL).status == "passed"
    assert run(box, "while True:\n    pass\n").status == "timeout"
    assert run(box, "import os\nos.fork()\n").status == "error"


def test_parallel_runs_cost_only_their_time_limit(sandbox):
    items = [("import time\ntime.sleep(0.5)\n", AssertTests(("assert True",)))] * 4 + [
        ("while True:\n    pass\n", AssertTests(("assert True",)))
    ]
    box = Sandbox(SandboxConfig(**{**FAST, "max_workers": 5}))
    start = time.perf_counter()
    results = box.run_many(items)
    wall = time.perf_counter() - start
    assert [r.status for r in results] == ["passed"] * 4 + ["timeout"]
    assert wall < 2.5  # in sequence: 4 x 0.5 s + 1 s; in parallel the sleeps overlap the 1 s loop


def test_isolation_says_which_walls_are_up_and_why_not():
    on = Sandbox(SandboxConfig(**FAST)).isolation()
    off = Sandbox(SandboxConfig(**FAST, bubblewrap=False)).isolation()
    assert not off["bubblewrap"] and "switched off" in off["bubblewrap_unavailable"]
    assert not off["pid_namespace_and_private_filesystem"]
    assert off["private_tmp_and_total_disk_cap"] == (off["network_namespace"] and _private_tmp_works())
    assert on["bubblewrap"] == (on["bubblewrap_unavailable"] == "")
    if on["bubblewrap"]:
        assert on["network_namespace"] and on["pid_namespace_and_private_filesystem"]
        assert on["private_tmp_and_total_disk_cap"]


def _private_tmp_works() -> bool:
    argv = private_tmp_argv(shutil.which("unshare") or "unshare", 1 << 20, 0) + ["true"]
    return subprocess.run(argv, capture_output=True).returncode == 0


def test_without_bubblewrap_root_still_gets_a_private_capped_tmp():
    """The fallback (root, no bubblewrap): /tmp and /dev/shm are one private tmpfs of
    ``max_disk_bytes``, the working directory; files under the per-file cap still fill it."""
    box = Sandbox(SandboxConfig(**FAST, audit_guard=False, bubblewrap=False, max_disk_bytes=4 << 20))
    if not box.isolation()["private_tmp_and_total_disk_cap"]:
        pytest.skip("no private /tmp here: not root, or unshare --mount / mount cannot run")
    name = f"prefalign-probe-{os.getpid()}"
    program = (
        f"import os\nprint(os.getcwd())\nopen('/dev/shm/{name}', 'w').write('x')\nopen('/tmp/{name}', 'w').write('x')\n"
        "for i in range(8):\n    open('f%d' % i, 'wb').write(b'x' * 1000000)\n"
    )
    result = run(box, program, ("assert True",))
    assert result.status == "error" and "No space left on device" in result.detail, result
    assert result.stdout_tail.split()[0] == "/tmp"
    assert not (Path("/dev/shm") / name).exists() and not (Path("/tmp") / name).exists()


def test_the_machine_is_probed_once_per_setting():
    Sandbox(SandboxConfig(**FAST))
    before = probe_isolation.cache_info()
    Sandbox(SandboxConfig(**{**FAST, "timeout": 3.0}))
    after = probe_isolation.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)


def test_a_missing_or_unusable_bwrap_is_reported(monkeypatch):
    monkeypatch.setattr(sandbox_wall.shutil, "which", lambda name, **kwargs: None)
    bwrap, why = sandbox_wall.probe_wall("/usr/bin/python3", None)
    assert bwrap is None and "not installed" in why and "apt-get install bubblewrap" in why
    monkeypatch.setattr(sandbox_wall.shutil, "which", lambda name, **kwargs: "/bin/false")
    bwrap, why = sandbox_wall.probe_wall("/usr/bin/python3", None)
    assert bwrap is None and "/bin/false failed (exit 1)" in why
    assert "home directory" in sandbox_wall.probe_wall("/root/.pyenv/versions/3.11.7/bin/python3", None)[1]
