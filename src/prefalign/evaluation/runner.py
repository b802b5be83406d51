"""``prefalign eval``: run evaluation tasks against a model or a folder of generations.

For each task of :mod:`prefalign.evaluation.registry` (or any object following the
:class:`~prefalign.evaluation.base.Task` protocol): take its first ``limit`` prompts, get
responses (batched KV-cache sampling through :func:`prefalign.rollout.generate.generate`, greedy
by default; or read from ``<generations_dir>/<task>.jsonl``, see
:mod:`prefalign.evaluation.generations`), score them with the task's own metric and aggregate.
The responses are saved with their per-response results, so a later run can re-score them.

Results (one JSON file, written atomically)::

    {"tasks": {NAME: {"category", "score", "metrics", "num_prompts", "num_responses",
                      "truncated_rate" (when known), "generations"}},
     "categories": {CATEGORY: {"score", "tasks"}},
     "overall": {"score", "task_mean", "num_tasks", "num_categories"},
     "model", "generations_dir", "seconds", "config", "comparison" (with --compare)}

Ivison et al. (2024) report each task, the average of each category and an overall average.
Here a category's score is the plain mean of its tasks' headline ``score`` and ``overall.score``
the mean of the category scores (each category weighs the same however many tasks it has);
``overall.task_mean`` is the mean over tasks. ``skipped`` names the tasks of a group left out (their
file or judge missing) with the reason.

``--tasks ivison`` runs the 11 benchmarks of Ivison et al. (2024, App. D) with each task's prompt format,
decoding (``task_decoding``) and metric as its module describes; judges and classifiers are
``--judges.*`` settings (:mod:`prefalign.evaluation.judge_settings`). Departures from Ivison et al.:
every prompt goes through the policy's chat template; GSM8K is zero-shot (they use 8-shot CoT); the
judges are the user's (see ``--help`` for each default and how far it is from the paper's).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from rich.console import Console

from prefalign.atomic import write_json_atomic
from prefalign.config import to_dict
from prefalign.data.schema import Prompt
from prefalign.evaluation.base import Task
from prefalign.evaluation.choice_scoring import choose_letters
from prefalign.evaluation.compare import compare_results, comparison_table, load_results, results_table
from prefalign.evaluation.generations import (
    Generations,
    read_generations,
    read_responses_file,
    sample_responses,
    write_generations,
)
from prefalign.evaluation.judge_settings import JudgeConfig, TaskUnavailable
from prefalign.evaluation.registry import build_task, canonical_name, category_rank, expand_task_names, task_entry
from prefalign.models.load import ModelConfig, load_causal_lm, load_tokenizer
from prefalign.rollout.generate import SamplingConfig


@dataclass
class EvalConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model to evaluate (not loaded when generations_dir is set)."""
    tasks: list[str] = field(default_factory=lambda: ["gsm8k", "ifeval"])
    """Tasks by name: mmlu, gsm8k, bbh, truthfulqa, humaneval, humaneval_plus, mbpp, mbpp_plus, apps, code_contests,
    toxigen, xstest, alpaca_eval, alpaca_eval_2, ifeval; or the group ivison (Ivison et al.'s 11 benchmarks: those whose
    file and judge are present run, the others are skipped with one line each)."""
    limit: int | None = None
    """Evaluate only the first this many prompts of each task (None: every prompt)."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.0, max_new_tokens=512))
    """Decoding (temperature 0: greedy); num_samples > 1 gives several responses per prompt (pass@k on code tasks)."""
    micro_batch_size: int = 16
    """Sequences per generate call."""
    device: str = "auto"
    """Where the model runs: auto (cuda when available), cpu or cuda."""
    generations_dir: str | None = None
    """Score the responses in this folder (<task>.jsonl per task) instead of generating them."""
    save_generations_dir: str | None = None
    """Where the generations are saved (default: beside the output, <output name>-generations/)."""
    output: str = "runs/eval/results.json"
    """Results file (JSON)."""
    compare: str | None = None
    """Results file of another run, printed side by side with this one (and the difference)."""
    task_paths: dict[str, str] = field(default_factory=dict)
    """Data file per task, e.g. --task_paths apps /data/apps/test.jsonl (default: the task's file under the data folder;
    other task options go in task_options)."""
    task_options: dict[str, dict[str, bool | int | float | str]] = field(default_factory=dict)
    """Further options per task, one option per task on the command line (--task_options mbpp split train gsm8k split
    test), any number and list values (e.g. ks: [1, 10]) in a --config YAML: {mbpp: {split: train, sanitized: true}}."""
    data_dir: str | None = None
    """Data folder (default: $PREFALIGN_DATA_DIR, else ../shared/data beside the checkout)."""
    seed: int = 0
    """Seed of the sampling (each task is sampled with it, so a task's result does not depend on the others)."""
    task_decoding: bool = True
    """Decode each task as Ivison et al. (App. D) do where the task says so (HumanEval+/MBPP+: 20 samples at temperature
    0.8, top-p 0.95; the others greedy), its max_new_tokens capped by --sampling.max_new_tokens; False: --sampling as
    given for every task."""
    generations_files: dict[str, str] = field(default_factory=dict)
    """Responses of a task from this file instead of generating them: a generations JSONL, or for AlpacaEval a
    model-outputs JSON ([{"instruction", "output"}], matched by instruction), e.g. alpaca_eval_2 X.json."""
    judges: JudgeConfig = field(default_factory=JudgeConfig)
    """Judges and classifiers of the judged tasks (AlpacaEval, TruthfulQA, ToxiGen, XSTest)."""

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("tasks: name at least one task")
        names = [canonical_name(t) for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: a task is named twice in {self.tasks}")
        names = [name for name, _ in expand_task_names(self.tasks)]
        named = [*self.task_paths, *self.task_options, *self.generations_files]
        stray = sorted({canonical_name(k) for k in named} - set(names))
        if stray:
            raise ValueError(f"task_paths/task_options/generations_files name tasks that are not run: {stray}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be positive (or None), got {self.limit}")
        if self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be positive, got {self.micro_batch_size}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def options_for(self, task: str) -> dict[str, Any]:
        """The options ``task`` is built with: its ``task_options`` plus its ``task_paths`` entry."""
        key = canonical_name(task)
        options: dict[str, Any] = {}
        for name, value in self.task_options.items():
            if canonical_name(name) == key:
                options.update(value)
        for name, path in self.task_paths.items():
            if canonical_name(name) == key:
                options["path"] = path
        return options

    def generations_out(self) -> Path:
        if self.save_generations_dir is not None:
            return Path(self.save_generations_dir)
        out = Path(self.output)
        return out.with_name(f"{out.stem}-generations")


PRESETS: dict[str, dict[str, Any]] = {
    # pass@1 and pass@10 on the code tasks from 20 samples per problem at temperature 0.8, top-p 0.95 (the setting
    # Chen et al. (2021) found best for large k).
    "code-pass-at-k": {
        "tasks": ["humaneval", "mbpp"],
        "sampling": {"temperature": 0.8, "top_p": 0.95, "num_samples": 20, "max_new_tokens": 512},
        "task_options": {"humaneval": {"ks": [1, 10]}, "mbpp": {"ks": [1, 10]}},
    },
    # Ivison et al.'s suite: every benchmark whose file and judge are present; long enough answers for BBH's
    # chains of thought and AlpacaEval (each task's own max_new_tokens applies below this cap).
    "ivison": {
        "tasks": ["ivison"],
        "sampling": {"temperature": 0.0, "max_new_tokens": 2048},
        "output": "runs/eval-ivison/results.json",
    },
    # A smoke run on the tiny random model (seconds; scores near 0).
    "tiny": {
        "model": {"name_or_path": "tiny-random"},
        "limit": 2,
        "sampling": {"temperature": 0.0, "max_new_tokens": 16},
        "output": "runs/eval-tiny/results.json",
    },
}


def data_dir_scope(data_dir: str | None):
    """A context in which the data folder is ``data_dir`` (nothing changes for None)."""
    return mock.patch.dict(os.environ, {"PREFALIGN_DATA_DIR": data_dir} if data_dir else {})


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def score_task(
    task: Task, prompts: Sequence[Prompt], generations: Generations
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the task's entry of the results, the per-response results) for responses to ``prompts``."""
    rows = [prompts[i] for i in generations.prompt_index]
    results = task.score(rows, generations.responses)
    if len(results) != len(rows):
        raise ValueError(f"task {task.name!r} returned {len(results)} results for {len(rows)} responses")
    metrics = {k: float(v) for k, v in task.aggregate(results).items()}
    entry: dict[str, Any] = {
        "category": task.category,
        "score": metrics["score"],
        "metrics": metrics,
        "num_prompts": len(prompts),
        "num_responses": len(rows),
    }
    if generations.truncated is not None:
        entry["truncated_rate"] = sum(generations.truncated) / len(rows)
    return entry, results


def summarize(task_entries: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Category averages and the overall average from ``{task: {"category", "score"}}`` (see the module docstring)."""
    if not task_entries:
        raise ValueError("no task results to summarize")
    by_category: dict[str, list[str]] = {}
    for name, entry in task_entries.items():
        by_category.setdefault(entry["category"], []).append(name)
    categories = {
        category: {"score": sum(float(task_entries[n]["score"]) for n in names) / len(names), "tasks": names}
        for category, names in sorted(by_category.items(), key=lambda kv: (category_rank(kv[0]), kv[0]))
    }
    scores = [float(e["score"]) for e in task_entries.values()]
    overall = {
        "score": sum(c["score"] for c in categories.values()) / len(categories),
        "task_mean": sum(scores) / len(scores),
        "num_tasks": len(task_entries),
        "num_categories": len(categories),
    }
    return {"categories": categories, "overall": overall}


class _Responder:
    """Responses for each task: from the generations folder, or sampled from a model loaded once."""

    def __init__(self, config: EvalConfig, model=None, tokenizer=None):
        self.config = config
        self.model, self.tokenizer = model, tokenizer
        self.generated = False  # whether some task's responses came from the model

    def sampling_for(self, task: Task) -> SamplingConfig:
        """``--sampling``, with the task's own decoding when ``task_decoding`` (max_new_tokens capped)."""
        cfg = self.config
        decoding = dict(getattr(task, "decoding", {}) or {}) if cfg.task_decoding else {}
        if "max_new_tokens" in decoding:
            decoding["max_new_tokens"] = min(decoding["max_new_tokens"], cfg.sampling.max_new_tokens)
        return replace(cfg.sampling, **decoding)

    def __call__(self, task: Task, prompts: Sequence[Prompt]) -> Generations:
        cfg = self.config
        files = {canonical_name(k): v for k, v in cfg.generations_files.items()}
        if task.name in files:
            return read_responses_file(files[task.name], prompts)
        if cfg.generations_dir is not None:
            return read_generations(Path(cfg.generations_dir) / f"{task.name}.jsonl", prompts)
        if self.model is None:
            self.tokenizer = load_tokenizer(cfg.model)
            self.model = load_causal_lm(cfg.model, seed=cfg.seed).to(resolve_device(cfg.device))
        self.generated = True
        letters = getattr(task, "answer_letters", None)
        if letters:
            prefix = getattr(task, "answer_prefix", "")
            chosen = choose_letters(
                self.model, self.tokenizer, prompts, letters, answer_prefix=prefix, batch_size=cfg.micro_batch_size
            )
            return Generations(list(range(len(prompts))), chosen, [False] * len(prompts))
        sampling = self.sampling_for(task)
        return sample_responses(self.model, self.tokenizer, prompts, sampling, cfg.micro_batch_size, cfg.seed)


def plan_tasks(config: EvalConfig, console: Console) -> tuple[list[Task], dict[str, list[Prompt]], dict[str, str]]:
    """The tasks to run with their prompts, and the skipped ones with why: a task of a group (``ivison``)
    whose file is missing or whose judge is not set is skipped with one line; a task named alone raises."""
    tasks, prompts_of, skipped = [], {}, {}
    for name, from_group in expand_task_names(config.tasks):
        options = config.options_for(name)
        if task_entry(name).takes_judges:
            options["judges"] = config.judges
        try:
            task = build_task(name, **options)
            prompts_of[task.name] = task.prompts(config.limit)  # every task's data is read before any generation
        except (FileNotFoundError, TaskUnavailable) as exc:
            if not from_group:
                raise
            skipped[name] = str(exc).splitlines()[0]
            console.print(f"skipped {name}: {skipped[name]}", soft_wrap=True, highlight=False, markup=False)
            continue
        tasks.append(task)
    if not tasks:
        raise FileNotFoundError(f"no task could run: {'; '.join(f'{k}: {v}' for k, v in skipped.items())}")
    return tasks, prompts_of, skipped


def evaluate(
    config: EvalConfig,
    tasks: Sequence[Task] | None = None,
    *,
    model=None,
    tokenizer=None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run every task, save generations, and return the results (not written; see :func:`run_eval`).

    ``tasks`` replaces building them from ``config.tasks``; ``model``/``tokenizer`` replace loading
    ``config.model``.
    """
    console = console or Console()
    started = time.time()
    respond = _Responder(config, model, tokenizer)
    entries: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    with data_dir_scope(config.data_dir):
        if tasks is None:
            tasks, prompts_of, skipped = plan_tasks(config, console)
        else:
            tasks = list(tasks)
            prompts_of = {t.name: t.prompts(config.limit) for t in tasks}
        if len({t.name for t in tasks}) != len(tasks):
            raise ValueError(f"two tasks share a name: {[t.name for t in tasks]}")
        for task in tasks:
            prompts = prompts_of[task.name]
            if not prompts:
                raise ValueError(f"task {task.name!r} has no prompts")
            task_started = time.time()
            generations = respond(task, prompts)
            entry, results = score_task(task, prompts, generations)
            path = write_generations(config.generations_out() / f"{task.name}.jsonl", prompts, generations, results)
            entries[task.name] = {**entry, "generations": str(path), "seconds": round(time.time() - task_started, 2)}
            console.print(
                f"{task.name}: score {entry['score']:.4f} over {len(prompts)} prompts ({len(generations)} responses)"
            )
    return {
        "tasks": entries,
        **summarize(entries),
        "skipped": skipped,
        "model": None if config.generations_dir or not respond.generated else config.model.name_or_path,
        "generations_dir": config.generations_dir,
        "seconds": round(time.time() - started, 2),
        "config": to_dict(config),
    }


def run_eval(
    config: EvalConfig,
    tasks: Sequence[Task] | None = None,
    *,
    model=None,
    tokenizer=None,
    console: Console | None = None,
) -> dict[str, Any]:
    """:func:`evaluate`, then print the table (and the comparison) and write ``config.output``."""
    console = console or Console()
    other = load_results(config.compare) if config.compare else None  # a bad file fails before any generation
    results = evaluate(config, tasks, model=model, tokenizer=tokenizer, console=console)
    console.print(
        results_table(results, title=f"evaluation of {results['model'] or config.generations_dir or 'response files'}")
    )
    if results.get("skipped"):
        console.print(f"skipped (file or judge missing, see above): {', '.join(results['skipped'])}", soft_wrap=True)
    if other is not None:
        comparison = compare_results(results, other)
        results["comparison"] = {"other": str(config.compare), **comparison}
        console.print(comparison_table(comparison, labels=("this run", Path(config.compare).name)))
    write_json_atomic(config.output, results)
    console.print(f"results: {config.output}; generations: {config.generations_out()}")
    return results
