"""One hostile program per class of attack that the sandbox module's docstring listed as *not*
protected against (before bubblewrap and comparison by value), plus the always-equal object and
its cousins. Each is now contained, or the test records the limitation that remains (strict xfail,
with why). The wall tests need bubblewrap and are skipped, with the probe's reason, only where it
cannot run."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest

import prefalign
from prefalign.rewards.code import AssertTests, CallTests, humaneval_tests
from prefalign.rewards.sandbox import ExecutionResult, Sandbox, SandboxConfig
from prefalign.rewards.sandbox_isolation import _UID_BASE

FAST = dict(timeout=2.0, memory_bytes=256 << 20, max_output_bytes=1 << 20, max_disk_bytes=4 << 20, max_workers=2)
PROJECT_FILE = Path(prefalign.__file__).resolve()
TRIVIAL = ("def f(x):\n    return x + 1\n", AssertTests(("assert f(1) == 2",)))


def without_bubblewrap(box: Sandbox) -> None:
    """Skip (or, in CI, where PREFALIGN_REQUIRE_BUBBLEWRAP=1, fail) with the probe's reason."""
    why = f"bubblewrap unavailable here: {box.isolation()['bubblewrap_unavailable']}"
    if os.environ.get("PREFALIGN_REQUIRE_BUBBLEWRAP") == "1":
        pytest.fail(why + " (PREFALIGN_REQUIRE_BUBBLEWRAP=1)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(SandboxConfig(**FAST))


def _wall(**overrides) -> Sandbox:
    box = Sandbox(SandboxConfig(**{**FAST, **overrides}))
    if not box.isolation()["bubblewrap"]:
        without_bubblewrap(box)
    return box


@pytest.fixture(scope="module")
def wall() -> Sandbox:
    """Bubblewrap with the audit hook on."""
    return _wall()


@pytest.fixture(scope="module")
def breached() -> Sandbox:
    """Bubblewrap with the audit hook off: the state of a program that got around the hook
    (``_posixsubprocess``, memory corruption, or anything else), facing the wall alone."""
    return _wall(audit_guard=False)


def run(box: Sandbox, program: str) -> ExecutionResult:
    """Run ``program`` with its output judged by the parent (stdio), then check the next one runs."""
    from prefalign.rewards.code import StdioTests

    result = box.run_tests(program, StdioTests(("",), ("",)))
    assert box.run_tests(*TRIVIAL).status == "passed", f"the next program failed after {program!r}"
    return result


# -- the audit hook is Python-level: a program gets around it -------------------------------------

SPAWN = """
import _posixsubprocess, os
r, w = os.pipe()
args = (
    [b"/bin/sh"], [b"/bin/sh"], True, (w,), None, [b"PATH=/usr/bin:/bin"],
    -1, -1, -1, w, -1, w, *os.pipe(), False, False, -1, None, None, None, -1, None,
)
args = ([b"/bin/sh", b"-c", %r.encode()],) + args[1:]
try:
    pid = _posixsubprocess.fork_exec(*args)
except TypeError:  # Python 3.12 added allow_vfork
    pid = _posixsubprocess.fork_exec(*args, False)
os.close(w)
out = b""
while chunk := os.read(r, 65536):
    out += chunk
os.waitpid(pid, 0)
print(out.decode())
"""
PEEK = f"cat {PROJECT_FILE} 2>&1; ls /root /home /work /etc 2>&1; ls /proc | grep -c '^[0-9]'; cat /proc/net/dev"


def _assert_sees_nothing(out: str) -> None:
    assert "No such file or directory" in out and "__version__" not in out and "import" not in out, out
    assert "lo:" in out and "eth" not in out, out  # a fresh network namespace: loopback only
    process_count = int([line for line in out.splitlines() if line.strip().isdigit()][0])
    assert process_count <= 6, out  # bwrap's init, the harness, the shell, ls and grep


def test_posixsubprocess_gets_past_the_hook_but_not_the_wall(wall):
    """``_posixsubprocess.fork_exec`` starts a shell without an audit event: the hook never sees
    it (the old gap); the shell finds no project, no home directory, no other process, no network."""
    result = run(wall, SPAWN % PEEK)
    assert result.returncode == 0, result
    _assert_sees_nothing(result.stdout_tail)


def test_a_program_without_the_hook_sees_nothing_of_the_host(breached):
    """Memory corruption, like ``_posixsubprocess``, ends with the hook gone: the wall alone holds."""
    program = f"import os\nif os.fork() == 0:\n    os.execv('/bin/sh', ['sh', '-c', {PEEK!r}])\nos.wait()\n"
    _assert_sees_nothing(run(breached, program).stdout_tail)


def test_world_readable_files_are_not_there(breached):
    program = (
        f"import os\nfor path in ({str(PROJECT_FILE)!r}, '/etc/passwd', '/root', '/home', {str(Path.cwd())!r}):\n"
        "    print(path, os.path.exists(path))\n"
    )
    result = run(breached, program)
    assert result.stdout_tail.count(" False") == 5, result.stdout_tail


def test_world_writable_places_are_private(breached):
    name = f"prefalign-attack-{secrets.token_hex(4)}"
    program = (
        "import os\nfor place in ('/tmp', '/dev/shm', '/var/tmp', '/'):\n"
        f"    try:\n        open(os.path.join(place, {name!r}), 'w').write('x')\n        print(place, 'written')\n"
        "    except OSError as exc:\n        print(place, type(exc).__name__)\n"
    )
    result = run(breached, program)
    assert "/tmp written" in result.stdout_tail  # its own tmpfs
    assert "/dev/shm written" not in result.stdout_tail and "/ written" not in result.stdout_tail
    for place in ("/tmp", "/dev/shm", "/var/tmp", "/"):
        assert not (Path(place) / name).exists()


def test_network_and_uid_isolation_do_not_need_root_inside_the_wall(breached):
    """bwrap runs unprivileged (as root the sandbox starts it under the throw-away uid), so the
    network namespace and the uid hold without any privilege inside."""
    program = "import os, socket\nprint(os.getuid())\nsocket.create_connection(('1.1.1.1', 53), timeout=1)\n"
    result = breached.run_tests(program, AssertTests(("assert True",)))
    assert result.status == "error" and "OSError" in result.detail, result  # no route at all
    if breached.isolation()["throwaway_uid_and_nproc"]:
        assert int(result.stdout_tail.split()[0]) >= _UID_BASE


# -- resources --------------------------------------------------------------------------------------


def test_total_disk_use_is_capped_not_only_per_file(breached):
    """Files of 1 MB (each under the 1 MB per-file cap) fill the run's 4 MB tmpfs: the fifth fails.
    tmpfs pages are memory outside RLIMIT_AS, so the same cap bounds that memory too."""
    program = "for i in range(8):\n    open('/tmp/f%d' % i, 'wb').write(b'x' * 1000000)\n"
    result = run(breached, program)
    assert result.status == "error" and "No space left on device" in result.detail, result


def test_cores_a_program_may_use_are_bounded_by_processes_and_time(breached):
    """Limitation kept: a program may keep several cores busy (``max_processes`` processes, each
    within its CPU limit) until the wall clock; it cannot outlive the run."""
    program = "import os\nfor _ in range(3):\n    if os.fork() == 0:\n        break\nwhile True:\n    pass\n"
    start = time.perf_counter()
    result = run(breached, program)
    assert result.status == "timeout" and time.perf_counter() - start < 15
    low = _UID_BASE + (os.getpid() % (1 << 20)) * 1024
    deadline = time.monotonic() + 5  # killed processes may take a moment to go on a loaded machine
    while (left := [p for p in os.listdir("/proc") if low <= _uid_of(p) < low + 1024]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []


def _uid_of(pid: str) -> int:
    """The uid of a live (not zombie) process, else -1."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
    except OSError:
        return -1
    return -1 if fields.get("State", "").strip().startswith("Z") else int(fields["Uid"].split()[0])


# -- comparison by value ----------------------------------------------------------------------------

ALWAYS_EQUAL = "class Any:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"


@pytest.mark.parametrize(
    "cheat, tests",
    [
        (ALWAYS_EQUAL + "def f(x):\n    return Any()\n", ("assert f(1) == 2",)),
        (ALWAYS_EQUAL + "def f(x):\n    return [Any()]\n", ("assert f(1) == [2]",)),
        (ALWAYS_EQUAL + "def f(x):\n    return Any()\n", ("assert f(1) in [2, 3]",)),
        ("class T:\n    def __bool__(self):\n        return True\ndef f(x):\n    return T()\n", ("assert f(1)",)),
        (
            "class Z:\n    def __sub__(self, other):\n        return 0.0\n    __abs__ = __sub__\n"
            "def f(x):\n    return Z()\n",
            ("assert abs(f(1) - 2.5) < 1e-6",),
        ),
        (
            "class F:\n    def __float__(self):\n        return 0.0\ndef f(x):\n    return F()\n",
            ("import math\nassert math.fabs(f(1)) < 1e-9",),
        ),
        (
            "class L(list):\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return L([0])\n",
            ("assert f(1) == [2]",),
        ),
        (ALWAYS_EQUAL + "class A:\n    def __new__(cls, x):\n        return Any()\nf = A\n", ("assert f(1) == 2",)),
        ("import builtins\nbuiltins.abs = lambda x: 0\ndef f(x):\n    return 7\n", ("assert abs(f(1) - 2) < 1e-6",)),
        (
            "class Meta(type):\n    __eq__ = lambda cls, other: True\n    __hash__ = lambda cls: hash(int)\n"
            "    __flags__ = property(lambda cls: type.__flags__.__get__(int))\n"
            "class Fake(metaclass=Meta):\n    __eq__ = lambda self, other: True\n    __bool__ = lambda self: True\n"
            "def f(x):\n    return Fake()\n",
            ("assert f(1) == 2", "assert f(1)"),
        ),
    ],
    ids=[
        "always_equal",
        "always_equal_inside_list",
        "always_equal_in",
        "always_true",
        "zero_difference",
        "zero_float",
        "list_subclass_eq",
        "class_as_function",
        "patched_builtin",
        "lying_metaclass",
    ],
)
def test_results_are_compared_by_value(sandbox, cheat, tests):
    result = sandbox.run_tests(cheat, AssertTests(tests))
    assert result.status == "failed", result


def test_a_result_that_cannot_be_reduced_fails_with_a_clear_detail(sandbox):
    result = sandbox.run_tests(ALWAYS_EQUAL + "def f(x):\n    return Any()\n", AssertTests(("assert f(1) == 2",)))
    assert "a Any object reached a comparison" in result.detail and "by value" in result.detail


def test_humaneval_check_and_call_tests_compare_by_value(sandbox):
    check = "def check(candidate):\n    assert candidate(2) == 4\n    assert abs(candidate(1.5) - 2.25) < 1e-9\n"
    assert sandbox.run_tests("def sq(x):\n    return x * x\n", humaneval_tests(check, "sq")).passed
    cheat = ALWAYS_EQUAL + "def sq(x):\n    return Any()\n"
    assert sandbox.run_tests(cheat, humaneval_tests(check, "sq")).status == "failed"
    assert not sandbox.run_tests(cheat.replace("sq", "add"), CallTests("add", ([1, 2],), ([3],))).passed


def test_namedtuples_counters_and_program_classes_still_work(sandbox):
    program = (
        "from collections import Counter, namedtuple\nP = namedtuple('P', 'x y')\n"
        "class Node:\n    def __init__(self, v):\n        self.v = v\n"
        "def f(x):\n    return P(x, x)\ndef g(s):\n    return Counter(s)\ndef val(n):\n    return n.v\n"
    )
    program += "import re\ndef h(s):\n    return re.match('a', s)\n"  # a C object: its truth is trusted
    tests = ("assert f(1) == (1, 1)", "assert g('aab') == {'a': 2, 'b': 1}", "assert val(root) == 3")
    tests += ("assert h('abc') and not h('b')",)
    result = sandbox.run_tests(program, AssertTests(tests, "root = Node(3)"))
    assert result.passed, result
    wrong = sandbox.run_tests(program.replace("P(x, x)", "P(x, 0)"), AssertTests(tests, "root = Node(3)"))
    assert wrong.status == "failed" and "<test 1>" in wrong.detail


# -- what stays open --------------------------------------------------------------------------------

FORGE = """
import os, sys
frame = sys._getframe(0)
while frame is not None and "mark" not in frame.f_locals:
    frame = frame.f_back
mark = frame.f_locals["mark"]
mark("ok", 1)
mark("done", 2)
os._exit(0)
def f(x):
    return x
"""


@pytest.mark.xfail(
    strict=True,
    reason="limitation kept: assert tests run in the program's own interpreter, so a program that "
    "walks its frames reaches the harness's verdict writer (and could patch the standard library the "
    "tests import); bubblewrap does not change that: only a process the program never controlled can "
    "judge it",
)
def test_a_program_that_walks_the_harness_frames_cannot_forge_a_pass(sandbox):
    assert not sandbox.run_tests(FORGE, AssertTests(("assert f(1) == 2",))).passed


def test_aggregating_builtins_reduce_what_they_take(sandbox):
    """Generators given to ``all``/``sum``/``sorted`` are reduced item by item; key functions pass."""
    tests = (
        "assert all(f(x) == x + 1 for x in range(3))",
        "assert sum(f(x) for x in range(3)) == 6",
        "assert sorted(map(f, [2, 0]), key=lambda v: -v) == [3, 1]",
        "from collections import deque\nassert len(deque([f(0)])) == 1 and max(deque([f(0), f(1)])) == 2",
    )
    assert sandbox.run_tests("def f(x):\n    return x + 1\n", AssertTests(tests)).passed
    cheat = ALWAYS_EQUAL + "def f(x):\n    return Any()\n"
    result = sandbox.run_tests(cheat, AssertTests(tests[:1]))
    assert result.status == "failed" and "a Any object" in result.detail, result
