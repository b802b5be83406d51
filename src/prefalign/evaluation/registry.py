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
``mmlu``           factuality                ``path`` (folder of ``<subject>_test.csv``), ``subjects``
``bbh``            reasoning                 ``path`` (the BIG-Bench-Hard folder), ``max_per_task``
``truthfulqa``     truthfulness              ``path``; judges: ``truth_judge``, ``info_judge``
``humaneval_plus`` coding                    ``path``, ``ks``, ``headline_k`` (EvalPlus, pass@10)
``mbpp_plus``      coding                    ``path``, ``ks``, ``headline_k`` (EvalPlus, pass@10)
``toxigen``        safety                    ``path``, ``max_per_group``; judge: ``toxicity_classifier``
``xstest``         safety                    ``path``; judge: ``refusal`` (string-match or judge)
``alpaca_eval``    instruction following     ``path``, ``reference``, ``instruction_difficulty``; ``judge``
``alpaca_eval_2``  instruction following     as ``alpaca_eval`` (reference GPT-4 Turbo, LC win rate)
=================  ========================  ==============================================

The task group ``ivison`` (:data:`TASK_GROUPS`) names the 11 benchmarks of Ivison et al. (2024).
Tasks marked with judges get the run's :class:`~prefalign.evaluation.judge_settings.JudgeConfig` as
the ``judges`` option (:attr:`TaskEntry.takes_judges`).

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
    takes_judges: bool = False


_REGISTRY: dict[str, TaskEntry] = {}
_ALIASES = {
    "codecontests": "code_contests",
    "humanevalplus": "humaneval_plus",
    "mbppplus": "mbpp_plus",
    "alpacaeval": "alpaca_eval",
    "alpacaeval2": "alpaca_eval_2",
}
#: named groups of tasks; ``ivison``: the 11 benchmarks of Ivison et al. (2024, section 2.2, App. D)
TASK_GROUPS = {
    "ivison": (
        "mmlu",
        "gsm8k",
        "bbh",
        "truthfulqa",
        "humaneval_plus",
        "mbpp_plus",
        "toxigen",
        "xstest",
        "alpaca_eval",
        "alpaca_eval_2",
        "ifeval",
    )
}


def canonical_name(name: str) -> str:
    """The registered spelling of ``name`` (case and ``-``/``_`` ignored, aliases resolved)."""
    key = name.strip().lower().replace("-", "_")
    return _ALIASES.get(key, key)


def register_task(
    name: str,
    category: str,
    factory: Callable[..., Task],
    description: str = "",
    *,
    replace: bool = False,
    takes_judges: bool = False,
) -> None:
    """Register ``factory(**options) -> Task`` under ``name``; the task it builds must report ``category``."""
    key = canonical_name(name)
    if not key or ":" in key:
        raise ValueError(f"a task name must be non-empty and contain no ':', got {name!r}")
    if key in _REGISTRY and not replace:
        raise ValueError(f"task {key!r} is already registered (pass replace=True to override it)")
    _REGISTRY[key] = TaskEntry(key, category, factory, description, takes_judges)


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


def _suite(factory_name: str) -> Callable[..., Task]:
    def build(**options: Any) -> Task:
        from prefalign.evaluation import suite_tasks

        return getattr(suite_tasks, factory_name)(**options)

    return build


register_task("mmlu", "factuality", _suite("mmlu"), "MMLU, 0-shot, accuracy (answer letter by next-token probability)")
register_task("bbh", "reasoning", _suite("bbh"), "Big-Bench Hard, 3-shot CoT, mean task exact match")
register_task(
    "truthfulqa",
    "truthfulness",
    _suite("truthfulqa"),
    "TruthfulQA generation, % truthful and informative",
    takes_judges=True,
)
register_task("humaneval_plus", "coding", _code("humaneval_plus_task"), "HumanEval+ (EvalPlus), pass@10 at T=0.8")
register_task("mbpp_plus", "coding", _code("mbpp_plus_task"), "MBPP+ (EvalPlus), pass@10 at T=0.8")
register_task("toxigen", "safety", _suite("toxigen"), "ToxiGen, 1 - share of toxic continuations", takes_judges=True)
register_task(
    "xstest", "safety", _suite("xstest"), "XSTest, F1 of refusals (unsafe prompts positive)", takes_judges=True
)
register_task(
    "alpaca_eval",
    "instruction following",
    _suite("alpaca_eval"),
    "AlpacaEval 1, win rate vs text-davinci-003",
    takes_judges=True,
)
register_task(
    "alpaca_eval_2",
    "instruction following",
    _suite("alpaca_eval_2"),
    "AlpacaEval 2, LC win rate vs GPT-4 Turbo",
    takes_judges=True,
)


def expand_task_names(names: list[str]) -> list[tuple[str, bool]]:
    """``(task, from_group)`` for each name, groups (``ivison``) expanded in their order, duplicates dropped."""
    out: list[tuple[str, bool]] = []
    for name in names:
        key = canonical_name(name)
        members = [(m, True) for m in TASK_GROUPS[key]] if key in TASK_GROUPS else [(key, False)]
        for member, grouped in members:
            if member not in [m for m, _ in out]:
                out.append((member, grouped))
    return out


def _task_as_reward(argument: str | None) -> RewardFunction:
    """``eval:TASK`` in :func:`prefalign.rewards.registry.task_reward`: the task's own per-response reward."""
    if not argument:
        raise ValueError("eval needs a task name, e.g. eval:gsm8k")
    return TaskReward(build_task(argument))


register_task_reward("eval", _task_as_reward)
