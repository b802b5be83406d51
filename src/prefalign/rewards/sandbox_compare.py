"""Rewrite test code so that it compares results by value, never by the program's own methods.

An assert-style test (``assert f(x) == y``, HumanEval's ``check(candidate)``) runs in the program's
interpreter, so a program could return an object whose ``__eq__`` always answers True, whose
``__bool__`` is always True, or whose ``__sub__`` and ``__abs__`` return 0 (to pass
``abs(f(x) - y) < 1e-6``). Before the tests are sent to the sandbox, their syntax tree is rewritten
so that every value they compare or compute with is first reduced, inside the child, to plain
built-in data (``__prefalign_plain__`` in :mod:`prefalign.rewards.sandbox_harness`: exact ``None``,
``bool``, numbers, ``str``, ``bytes``, ``list``, ``tuple``, ``dict``, ``set``; subclasses such as
``namedtuple`` or ``Counter`` become their built-in base), whose comparisons the program cannot
change. A value that cannot be reduced fails the test with a detail naming its type.

What is reduced: both sides of every comparison except ``is`` / ``is not``, and the arguments of the
value-taking builtins (``abs``, ``round``, ``len``, ``divmod``, ``pow``, the numeric constructors,
every ``math`` function, and ``sum``, ``min``, ``max``, ``sorted``, ``all``, ``any``, which take a
generator's items reduced one by one; functions and classes, e.g. a ``key``, pass as they are). The condition of
every ``assert``, ``if``, ``while`` and conditional expression and the operands of ``and`` / ``or``,
unary and binary operators and augmented assignments are reduced too, except that an object of a C
type other than the built-in containers (``re.Match``, ``deque``) is kept: its truth and operators
are C code the program cannot change (MBPP's ``assert check_str("annie")`` tests a match object's
truth). What is not reduced: values passed to other calls (the program's own classes built by a
test's set-up, e.g. MBPP's ``root = Node(1)``, must reach the program's functions intact), attribute
access and indexing (their result is reduced when compared).

Departure from the data sets' own harnesses: ``OrderedDict`` equality loses its order sensitivity
(it becomes a ``dict``) and a ``deque``, ``Fraction`` or ``Decimal`` result cannot be compared
(none of the HumanEval or MBPP solutions returns one). Test code that does not parse is left as it
is (the sandbox reports the SyntaxError).
"""

from __future__ import annotations

import ast
import functools

PLAIN, OPERAND, TRUTH, CALL = (
    "__prefalign_plain__",
    "__prefalign_operand__",
    "__prefalign_truth__",
    "__prefalign_call__",
)
# builtins that read their caller's frame: called through a helper, they would read the helper's
_FRAME_READERS = ("super", "globals", "locals", "vars", "dir", "eval", "exec")


def _wrap(helper: str, node: ast.expr) -> ast.expr:
    if helper in (PLAIN, OPERAND) and isinstance(node, ast.Constant):
        return node  # a literal in the test is plain already
    return ast.Call(func=ast.Name(id=helper, ctx=ast.Load()), args=[node], keywords=[])


class _ByValue(ast.NodeTransformer):
    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
            return node
        node.left = _wrap(PLAIN, node.left)
        node.comparators = [_wrap(PLAIN, c) for c in node.comparators]
        return node

    def _test(self, node):
        self.generic_visit(node)
        node.test = _wrap(TRUTH, node.test)
        return node

    visit_Assert = visit_If = visit_While = visit_IfExp = _test

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        node.values = [_wrap(OPERAND, v) for v in node.values]
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.operand, ast.Constant):
            return node  # -1 stays a literal
        node.operand = _wrap(OPERAND, node.operand)
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        node.left, node.right = _wrap(OPERAND, node.left), _wrap(OPERAND, node.right)
        return node

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self.generic_visit(node)
        node.value = _wrap(OPERAND, node.value)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id in _FRAME_READERS + (PLAIN, OPERAND, TRUTH, CALL):
            return node
        return ast.Call(func=ast.Name(id=CALL, ctx=ast.Load()), args=[node.func, *node.args], keywords=node.keywords)


@functools.lru_cache(maxsize=4096)
def compare_by_value(source: str) -> str:
    """``source`` rewritten to compare plain data (see the module docstring); unchanged if it
    does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source
    return ast.unparse(ast.fix_missing_locations(_ByValue().visit(tree)))
