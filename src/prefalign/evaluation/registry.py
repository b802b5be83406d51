"""Evaluation tasks by name: ``build_task("gsm8k", limit-free options...)`` returns a :class:`Task`.

Built in (each with the category of Ivison et al., 2024, under which its score is averaged):

=================  ========================  ==============================================
name               category                  options (keyword arguments of the factory)
=================  ========================  ==============================================
``gsm8k``          reasoning                 ``split``, ``path``, ``instruction``, ``system``
``ifeval``         instruction following     ``path``, ``ruleset``, ``headline``
``humaneval``      coding                    ``path``, ``ks``
``mbpp``           coding                    ``split``, ``sanitized``, ``path``, ``ks``
``apps``           coding                    ``path`` (default ``apps/test.jsonl`` under the
                                             data folder), ``difficulty``, ``num_public``, ...
``code_contests``  coding                    ``path`` (default ``code_contests/test.jsonl``), ...
=================  ========================  ==============================================

``codecontests`` and ``code-contests`` are aliases of ``code_contests``; names ignore case and
``-``/``_``. The code tasks are imported only when built, so listing or building the other tasks
never touches the sandbox. Other code (or a test) adds its own task with :func:`register_task`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefalign.evaluation.base import Task, TaskReward
from prefalign.rewards.base import RewardFunction
from prefalign.rewards.registry import register_task_reward

#: the order categories are shown in, as in Ivison et al. (2024); others follow alphabetically
CATEGORY_ORDER = ("factuality", "reasoning", "coding", "instruction following", "truthfulness", "safety", "chat")


@dataclass(frozen=True)
class TaskEntry:
    """A registered task: its ``name``, its ``category``, a factory taking the task's options."""

    name: str
    category: str
    factory: Callable[..., Task]
    description: str


_REGISTRY: dict[str, TaskEntry] = {}
_ALIASES = {"codecontests": "code_contests"}


def canonical_name(name: str) -> str:
    """The registered spelling of ``name`` (case and ``-``/``_`` ignored, aliases resolved)."""
    key = name.strip().lower().replace("-", "_")
    return _ALIASES.get(key, key)


def register_task(
    name: str, category: str, factory: Callable[..., Task], description: str = "", *, replace: bool = False
) -> None:
    """Register ``factory(**options) -> Task`` under ``name``; the task it builds must report ``category``."""
    key = canonical_name(name)
    if not key or ":" in key:
        raise ValueError(f"a task name must be non-empty and contain no ':', got {name!r}")
    if key in _REGISTRY and not replace:
        raise ValueError(f"task {key!r} is already registered (pass replace=True to override it)")
    _REGISTRY[key] = TaskEntry(key, category, factory, description)


def unregister_task(name: str) -> None:
    """Remove a registered task (tests use it to clean up after themselves)."""
    _REGISTRY.pop(canonical_name(name), None)


def list_tasks() -> list[TaskEntry]:
    """Every registered task, by category (in :data:`CATEGORY_ORDER`) and then by name."""
    return sorted(_REGISTRY.values(), key=lambda e: (category_rank(e.category), e.category, e.name))


def task_names() -> list[str]:
    return [e.name for e in list_tasks()]


def category_rank(category: str) -> int:
    return CATEGORY_ORDER.index(category) if category in CATEGORY_ORDER else len(CATEGORY_ORDER)


def task_entry(name: str) -> TaskEntry:
    key = canonical_name(name)
    if key not in _REGISTRY:
        raise ValueError(f"unknown evaluation task {name!r}; registered: {', '.join(task_names())}")
    return _REGISTRY[key]


def build_task(name: str, **options: Any) -> Task:
    """The task registered as ``name``, built with ``options``; checks it follows the Task protocol."""
    entry = task_entry(name)
    try:
        task = entry.factory(**options)
    except TypeError as exc:
        raise ValueError(f"task {entry.name!r}: bad options {sorted(options)}: {exc}") from exc
    if not isinstance(task, Task):
        raise TypeError(
            f"the factory of task {entry.name!r} returned {type(task).__name__}, which lacks the Task protocol"
        )
    if task.category != entry.category:
        raise ValueError(
            f"task {entry.name!r} is registered under {entry.category!r} but reports category {task.category!r}"
        )
    return task


# -- built-in tasks ---------------------------------------------------------------------------


def _gsm8k(**options: Any) -> Task:
    from prefalign.evaluation.gsm8k_task import GSM8KTask

    return GSM8KTask(**options)


def _ifeval(**options: Any) -> Task:
    from prefalign.evaluation.ifeval_task import IFEvalTask

    return IFEvalTask(**options)


def _code(factory_name: str) -> Callable[..., Task]:
    def build(**options: Any) -> Task:
        from prefalign.evaluation import code_tasks

        return getattr(code_tasks, factory_name)(**options)

    return build


register_task("gsm8k", "reasoning", _gsm8k, "GSM8K test split, exact match of the final number")
register_task("ifeval", "instruction following", _ifeval, "IFEval, prompt-level strict accuracy")
register_task("humaneval", "coding", _code("humaneval_task"), "HumanEval, pass@1 from the sandboxed unit tests")
register_task("mbpp", "coding", _code("mbpp_task"), "MBPP test split (task ids 11-510), pass@1")
register_task("apps", "coding", _code("apps_task"), "APPS (needs its rows: path=...), pass@1")
register_task("code_contests", "coding", _code("code_contests_task"), "CodeContests (needs its rows: path=...), pass@1")


def _task_as_reward(argument: str | None) -> RewardFunction:
    """``eval:TASK`` in :func:`prefalign.rewards.registry.task_reward`: the task's own per-response reward."""
    if not argument:
        raise ValueError("eval needs a task name, e.g. eval:gsm8k")
    return TaskReward(build_task(argument))


register_task_reward("eval", _task_as_reward)
