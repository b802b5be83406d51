"""The sandbox child's entry point (a template, not imported by the package).

:mod:`prefalign.rewards.sandbox` reads this file, substitutes ``MEMORY_EXIT`` with its exit code
for a MemoryError, and runs it as ``python -I -S -B -c <source> job_fd`` (the job is an open file
the parent passes, so that nothing in the sandbox can open it). It imports nothing heavy (start-up
is most of a trivial program's cost): it reads the job (marshal), sets the limits, drops to the
throw-away uid, installs the audit-hook guard, then runs the stages. Test stages (already rewritten
by :mod:`prefalign.rewards.sandbox_compare`) run with the builtins as they were before the program
ran, plus the helpers below that reduce what they compare to plain built-in data.
"""

import builtins
import marshal
import os
import sys

_DENY = {
    "os.fork",
    "os.forkpty",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.system",
    "os.kill",
    "os.killpg",
    "os.startfile",
    "signal.pthread_kill",
    "subprocess.Popen",
    "pty.spawn",
    "resource.setrlimit",
    "resource.prlimit",
    "sqlite3.enable_load_extension",
    "webbrowser.open",
}
_DENY_PREFIX = (
    "socket.",
    "ctypes.",
    "urllib.",
    "http.",
    "ftplib.",
    "smtplib.",
    "imaplib.",
    "poplib.",
    "nntplib.",
    "telnetlib.",
    "syslog.",
)
_READ_EVENTS = {
    "os.listdir": (0,),
    "os.scandir": (0,),
    "os.chdir": (0,),
    "glob.glob": (0,),
    "os.listxattr": (0,),
    "os.getxattr": (0,),
}
_WRITE_EVENTS = {
    "os.mkdir": (0,),
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.rename": (0, 1),
    "os.link": (0, 1),
    "os.symlink": (1,),
    "os.truncate": (0,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.utime": (0,),
    "os.setxattr": (0,),
    "os.removexattr": (0,),
    "sqlite3.connect": (0,),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _install_guard(workdir, read_roots):
    realpath, fsdecode, sep = os.path.realpath, os.fsdecode, os.sep
    workdir = realpath(workdir)

    def inside(path, roots):
        if path is None or isinstance(path, int):
            return True
        try:
            path = realpath(fsdecode(path))
        except (TypeError, ValueError):
            return False
        return any(path == r or path.startswith(r.rstrip(sep) + sep) for r in roots)

    def hook(event, args):
        if event == "open":
            mode, flags = args[1], (args[2] if len(args) > 2 else 0) or 0
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
            allowed = inside(args[0], (workdir,) if writes else (workdir,) + read_roots)
        elif event in _READ_EVENTS:
            allowed = all(inside(args[i], (workdir,) + read_roots) for i in _READ_EVENTS[event] if i < len(args))
        elif event in _WRITE_EVENTS:
            allowed = all(inside(args[i], (workdir,)) for i in _WRITE_EVENTS[event] if i < len(args))
        else:
            allowed = event not in _DENY and not event.startswith(_DENY_PREFIX)
        if not allowed:
            raise PermissionError("sandbox refused %s%r" % (event, tuple(args)[:2]))

    sys.addaudithook(hook)


def _summary(exc):
    try:
        text = "%s: %s" % (type(exc).__name__, exc)
    except BaseException:
        text = type(exc).__name__
    return text.replace("\n", " ")[:300]


def _out_of_memory():
    os.write(2, b"MemoryError: the program exceeded its memory limit\n")
    os._exit(MEMORY_EXIT)


def _marker(nonce):
    def mark(kind, index, summary=""):
        try:
            sys.stdout.flush()
        except BaseException:
            pass
        os.write(1, ("\n%s\t%s\t%d\t%s\n" % (nonce, kind, index, summary)).encode())

    return mark


_IMMUTABLE_TYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: built-in and C types; never a class statement's


class _Method:
    def method(self):
        pass


class NotPlainData(BaseException):
    """A value the tests compare is not plain built-in data (a BaseException, so that a test's
    ``except Exception`` cannot swallow it)."""


def _value_helpers():
    """The helpers the rewritten tests call (see :mod:`prefalign.rewards.sandbox_compare`):
    ``plain`` (a deep copy in exact built-in types, or NotPlainData), ``operand``, ``truth`` and
    ``call`` (a call whose arguments are reduced when the callee is a value-taking builtin), closed
    over the builtins as they are now, before the program can replace them."""
    _type, _isinstance, _len, _id, _bool, _getattr = type, isinstance, len, id, bool, getattr
    _complex, _bytes, _bytearray, _memoryview, _dict, _vars, _set = (
        complex,
        bytes,
        bytearray,
        memoryview,
        dict,
        vars,
        set,
    )
    # types are looked up by id and their flags read through ``type``'s own descriptor: a program's
    # metaclass could answer ``==``, ``hash`` or ``__flags__`` as it likes
    exact = frozenset(map(_id, (type(None), bool, int, float, complex, str, bytes, bytearray, range)))
    flags = type.__dict__["__flags__"].__get__
    bases = ((int, int.__index__), (float, float.__float__), (str, str.__str__))
    bases += ((complex, lambda v: _complex(complex.real.__get__(v), complex.imag.__get__(v))),)
    bases += ((bytes, lambda v: _bytes(_memoryview(v))), (bytearray, lambda v: _bytearray(_memoryview(v))))
    containers = ((list, list.__iter__, list), (tuple, tuple.__iter__, tuple))
    containers += ((frozenset, frozenset.__iter__, frozenset), (set, set.__iter__, set))
    value_taking = [abs, round, len, divmod, pow, float, int, complex, bool]
    value_taking += [f for name, f in _vars(__import__("math")).items() if name[0] != "_" and callable(f)]
    aggregating = [sum, min, max, sorted, all, any]  # their iterable argument is reduced item by item
    builtin_containers = (list, tuple, set, frozenset, dict)
    functions = frozenset(map(_id, (type(lambda: 0), type(len), type(_Method().method), type)))  # keys, classes
    # by identity (the dict keeps them alive, so ids stay valid): id -> reduces iterables lazily
    strict = _dict([(_id(f), (f, False)) for f in value_taking] + [(_id(f), (f, True)) for f in aggregating])

    def plain(value, _active=None):
        kind = _type(value)
        if _id(kind) in exact or kind is type:  # a class whose metaclass is ``type`` compares by identity
            return value
        active = _active if _active is not None else _set()
        if _id(value) in active or _len(active) > 200:
            raise NotPlainData("the result refers to itself or is nested more than 200 levels deep")
        active.add(_id(value))
        try:
            for base, iterate, make in containers:
                if _isinstance(value, base):
                    return make([plain(item, active) for item in iterate(value)])
            if _isinstance(value, dict):
                return {plain(k, active): plain(v, active) for k, v in dict.items(value)}
        finally:
            active.discard(_id(value))
        for base, convert in bases:
            if _isinstance(value, base):
                return convert(value)
        raise NotPlainData(
            "a %s object reached a comparison; results are compared by value, as plain built-in data"
            " (None, bool, numbers, str, bytes, list, tuple, dict, set), never by their own __eq__"
            % _getattr(kind, "__qualname__", "?")
        )

    def operand(value):
        """``plain``, except that an object of a C type (``re.Match``, ``deque``, ...) that is not a
        built-in container is kept: its truth and operators are C code the program cannot change."""
        kind = _type(value)
        if _id(kind) in exact or not flags(kind) & _IMMUTABLE_TYPE or _isinstance(value, builtin_containers):
            return plain(value)
        return value

    def truth(value):
        return _bool(operand(value))

    def argument(value, aggregate):
        kind = _type(value)
        if _id(kind) in exact or _id(kind) in functions:
            return value
        if flags(kind) & _IMMUTABLE_TYPE and not _isinstance(value, builtin_containers):
            # a generator, map, deque, ...: its items are reduced as an aggregating builtin takes them
            return (plain(item) for item in value) if aggregate else value
        return plain(value)

    def call(function, /, *args, **kwargs):
        entry = strict.get(_id(function))
        if entry is not None:
            args = [argument(a, entry[1]) for a in args]
            kwargs = {k: argument(v, entry[1]) for k, v in kwargs.items()}
        return function(*args, **kwargs)

    helpers = {"plain": plain, "operand": operand, "truth": truth, "call": call}
    return {"__prefalign_%s__" % name: helper for name, helper in helpers.items()}


def _run_checked(stages, mark, stop_at_first_failure):
    namespace = {"__name__": "__solution__", "__builtins__": builtins}
    test_builtins = dict(vars(builtins), **_value_helpers())
    for index, (label, source, is_test) in enumerate(stages):
        try:
            if index:  # the tests: the builtins as they were, whatever the program did to them
                namespace["__builtins__"] = test_builtins
            exec(compile(source, label, "exec"), namespace)
        except MemoryError:
            _out_of_memory()
        except BaseException as exc:
            kind = "fail" if is_test and isinstance(exc, (AssertionError, NotPlainData)) else "error"
            mark(kind, index, _summary(exc))
            sys.__excepthook__(type(exc), exc, exc.__traceback__)
            if not is_test or stop_at_first_failure:
                os._exit(1)
        else:
            mark("ok", index)
    mark("done", len(stages))
    os._exit(0)


def _run_script(label, source):
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(source, label, "exec"), namespace)
    except MemoryError:
        _out_of_memory()


def _main(job_fd):
    with open(job_fd, "rb") as fh:
        job = marshal.load(fh)
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; a write past the cap must kill
    for name, soft, hard in job["limits"]:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    if job["uid"] is not None:
        os.setgroups([])
        os.setgid(job["uid"])
        os.setuid(job["uid"])
    if job["write_program"]:  # inside bubblewrap: the private working directory starts empty
        with open(os.path.join(job["workdir"], "solution.py"), "w", encoding="utf-8") as fh:
            fh.write(job["stages"][0][1])
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)
    builtins.exit = builtins.quit = sys.exit
    sys.argv = ["solution.py"]
    if job["guard"]:
        _install_guard(job["workdir"], tuple(job["read_roots"]))
    if job["nonce"] is None:
        _run_script(*job["stages"][0][:2])
    else:
        _run_checked(job["stages"], _marker(job.pop("nonce")), job["stop_at_first_failure"])


if __name__ == "__main__":
    _main(int(sys.argv[1]))
