"""Code-generation benchmarks as tasks: HumanEval, MBPP, APPS, CodeContests (category "coding").

A :class:`CodeTask` scores a response by running its program in the sandbox against the prompt's
hidden tests, through the very functions the RL reward uses (:func:`prefalign.rewards.code.test_items`
and :meth:`CodeExecutionReward.reward_of`), so ``reward`` in each result is the test-case reward
of Xu et al. (2024, section 6: 10 for a pass, 0 otherwise). :meth:`CodeTask.aggregate` reports
the unbiased pass@k of Chen et al. (2021) over the samples of each problem, and, for tasks with
public tests, n@k (Li et al., 2022; Xu et al., Table 8's 10@1k), for which ``score`` also runs the
public tests. The headline ``score`` is pass@1, except for HumanEval+ and MBPP+, scored as in Ivison et al.
(2024, App. D): pass@10 from 20 samples per problem at temperature 0.8 (top-p 0.95, open-instruct's
setting), the EvalPlus tests run in our sandbox (:mod:`prefalign.data.sources.evalplus`).

Departure: one time limit for every problem (the sandbox's), not CodeContests' per-problem limits
(kept in ``metadata["time_limit_seconds"]``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prefalign.data.schema import Prompt
from prefalign.data.sources.code import load_apps, load_code_contests, load_humaneval, load_mbpp
from prefalign.data.sources.evalplus import load_evalplus
from prefalign.evaluation.metrics import mean_pass_at_k, n_at_k
from prefalign.rewards.code import CodeExecutionReward, test_items
from prefalign.rewards.sandbox import STATUSES, Sandbox


class CodeTask:
    """A code benchmark: prompts from a loader, scored by running programs in a sandbox."""

    category = "coding"

    def __init__(
        self,
        name: str,
        load: Callable[[], list[Prompt]],
        sandbox: Sandbox | None = None,
        *,
        ks: Sequence[int] = (1,),
        n_at_ks: Sequence[tuple[int, int]] = (),
        pass_reward: float = 10.0,
        fail_reward: float = 0.0,
        headline_k: int = 1,
        decoding: dict[str, Any] | None = None,
    ):
        self.name = name
        self.headline_k = headline_k
        self.decoding = dict(decoding or {})
        self._load = load
        self._prompts: list[Prompt] | None = None
        self.ks, self.n_at_ks = tuple(ks), tuple(n_at_ks)
        self.reward = CodeExecutionReward(sandbox, pass_reward=pass_reward, fail_reward=fail_reward, which="hidden")

    def prompts(self, limit: int | None = None) -> list[Prompt]:
        if self._prompts is None:
            self._prompts = self._load()
        return list(self._prompts[:limit] if limit is not None else self._prompts)

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[dict[str, Any]]:
        """Run hidden tests (and public ones, where n@k is asked for and the prompt has them)."""
        items = test_items(prompts, responses, "hidden")
        with_public = [i for i, p in enumerate(prompts) if self.n_at_ks and p.metadata.get("public_tests")]
        public_items = test_items([prompts[i] for i in with_public], [responses[i] for i in with_public], "public")
        results = self.reward.sandbox.run_many(items + public_items)
        hidden, public = results[: len(items)], dict(zip(with_public, results[len(items) :]))
        out = []
        for index, (prompt, result) in enumerate(zip(prompts, hidden)):
            out.append(
                {
                    "reward": self.reward.reward_of(result),
                    "passed": result.passed,
                    "passed_public": public[index].passed if index in public else None,
                    "status": result.status,
                    "task_id": prompt.metadata.get("task_id", f"{self.name}/{index}"),
                    "tests_passed": result.tests_passed,
                    "tests_total": result.tests_total,
                    "elapsed": result.elapsed,
                    "detail": result.detail,
                }
            )
        return out

    def aggregate(self, results: Sequence[dict[str, Any]]) -> dict[str, float]:
        """pass@k (for every k no larger than the fewest samples of a problem), n@k, status shares."""
        if not results:
            raise ValueError(f"{self.name}: no results to aggregate")
        by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for result in results:
            by_problem[result["task_id"]].append(result)
        samples = [len(group) for group in by_problem.values()]
        correct = [sum(bool(r["passed"]) for r in group) for group in by_problem.values()]
        metrics = {"num_problems": float(len(by_problem)), "num_samples": float(len(results))}
        for k in self.ks:
            if k <= min(samples):
                metrics[f"pass@{k}"] = mean_pass_at_k(samples, correct, k)
        if self.headline_k > min(samples):
            raise ValueError(
                f"{self.name}: the score is pass@{self.headline_k}, which needs at least {self.headline_k} samples per "
                f"problem; got {min(samples)} (set --sampling.num_samples)"
            )
        metrics["score"] = mean_pass_at_k(samples, correct, self.headline_k)
        metrics.update(self._n_at_k(by_problem, min(samples)))
        statuses = Counter(r["status"] for r in results)
        metrics.update({f"status/{s}": statuses[s] / len(results) for s in STATUSES})
        metrics["reward/mean"] = float(np.mean([r["reward"] for r in results]))
        return metrics

    def _n_at_k(self, by_problem: dict[str, list[dict[str, Any]]], fewest: int) -> dict[str, float]:
        if any(r["passed_public"] is None for group in by_problem.values() for r in group):
            return {}
        out = {}
        for n, k in self.n_at_ks:
            if k <= fewest:
                groups = by_problem.values()
                solved = [n_at_k([r["passed_public"] for r in g], [r["passed"] for r in g], n, k) for g in groups]
                out[f"{n}@{k}"] = float(np.mean(solved))
        return out


def humaneval_task(
    sandbox: Sandbox | None = None, *, path: str | Path | None = None, ks: Sequence[int] = (1, 10, 100)
) -> CodeTask:
    """HumanEval (164 problems), pass@k as in Chen et al. (2021)."""
    return CodeTask("humaneval", lambda: load_humaneval(path=path), sandbox, ks=ks)


def mbpp_task(
    sandbox: Sandbox | None = None,
    *,
    split: str = "test",
    sanitized: bool = False,
    path: str | Path | None = None,
    ks: Sequence[int] = (1, 10, 100),
) -> CodeTask:
    """MBPP (the 500-problem test split by default; ``sanitized`` for the 427-row hand-checked set)."""
    name = "mbpp_sanitized" if sanitized else "mbpp"
    return CodeTask(name, lambda: load_mbpp(split, sanitized=sanitized, path=path), sandbox, ks=ks)


def apps_task(
    path: str | Path | None = None,
    sandbox: Sandbox | None = None,
    *,
    difficulty: str | None = None,
    num_public: int = 0,
    ks: Sequence[int] = (1, 5, 10),
    n_at_ks: Sequence[tuple[int, int]] = (),
) -> CodeTask:
    """APPS (Hendrycks et al., 2021), optionally one difficulty; n@k needs ``num_public`` > 0."""
    name = f"apps_{difficulty}" if difficulty else "apps"

    def load() -> list[Prompt]:
        return load_apps(path, difficulty=difficulty, num_public=num_public)

    return CodeTask(name, load, sandbox, ks=ks, n_at_ks=n_at_ks)


def code_contests_task(
    path: str | Path | None = None,
    sandbox: Sandbox | None = None,
    *,
    include_generated: bool = True,
    ks: Sequence[int] = (1, 10, 100),
    n_at_ks: Sequence[tuple[int, int]] = ((10, 1000),),
) -> CodeTask:
    """CodeContests (Li et al., 2022) with Xu et al.'s 10@1k (reported once a problem has 1000 samples)."""

    def load() -> list[Prompt]:
        return load_code_contests(path, include_generated=include_generated)

    return CodeTask("code_contests", load, sandbox, ks=ks, n_at_ks=n_at_ks)


#: Ivison et al.'s decoding for the EvalPlus tasks (open-instruct's codex_humaneval settings)
PLUS_DECODING = {"temperature": 0.8, "top_p": 0.95, "num_samples": 20, "max_new_tokens": 512}


def humaneval_plus_task(
    sandbox: Sandbox | None = None, *, path: str | Path | None = None, ks: Sequence[int] = (1, 10), headline_k: int = 10
) -> CodeTask:
    """HumanEval+ (EvalPlus): pass@10 over the base and plus inputs."""
    load = lambda: load_evalplus("humaneval_plus", path)  # noqa: E731
    return CodeTask("humaneval_plus", load, sandbox, ks=ks, headline_k=headline_k, decoding=PLUS_DECODING)


def mbpp_plus_task(
    sandbox: Sandbox | None = None, *, path: str | Path | None = None, ks: Sequence[int] = (1, 10), headline_k: int = 10
) -> CodeTask:
    """MBPP+ (EvalPlus): pass@10 over the base and plus inputs."""
    load = lambda: load_evalplus("mbpp_plus", path)  # noqa: E731
    return CodeTask("mbpp_plus", load, sandbox, ks=ks, headline_k=headline_k, decoding=PLUS_DECODING)


CODE_TASKS: dict[str, Callable[..., CodeTask]] = {
    "humaneval": humaneval_task,
    "mbpp": mbpp_task,
    "apps": apps_task,
    "code_contests": code_contests_task,
    "humaneval_plus": humaneval_plus_task,
    "mbpp_plus": mbpp_plus_task,
}
