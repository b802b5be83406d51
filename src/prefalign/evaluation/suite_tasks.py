"""Factories of the Ivison et al. (2024) suite's tasks for the registry: each takes the task's options and,
where it needs a judge or classifier, the run's :class:`~prefalign.evaluation.judge_settings.JudgeConfig`
(``judges``). A task whose judge is not set raises :class:`~prefalign.evaluation.judge_settings.TaskUnavailable`
naming the setting; judges are built lazily, on the first response scored.
"""

from __future__ import annotations

from typing import Any

from prefalign.evaluation.alpaca_eval_task import AlpacaEvalTask
from prefalign.evaluation.judge_settings import (
    JudgeConfig,
    Lazy,
    TaskUnavailable,
    ToxicityClassifier,
    YesProbabilityJudge,
    judge_backend,
    pairwise_judge,
)
from prefalign.evaluation.knowledge_tasks import BBHTask, MMLUTask, TruthfulQATask
from prefalign.evaluation.safety_tasks import ToxiGenTask, XSTestTask


def mmlu(**options: Any) -> MMLUTask:
    return MMLUTask(**options)


def bbh(**options: Any) -> BBHTask:
    return BBHTask(**options)


def truthfulqa(judges: JudgeConfig | None = None, **options: Any) -> TruthfulQATask:
    if "truth_judge" not in options or "info_judge" not in options:
        judges = judges or JudgeConfig()
        if not judges.truth_judge or not judges.info_judge:
            raise TaskUnavailable("truthfulqa needs --judges.truth_judge and --judges.info_judge (local model folders)")
        batch, device = judges.classifier_batch_size, judges.device
        options.setdefault(
            "truth_judge", Lazy(lambda: YesProbabilityJudge.from_folder(judges.truth_judge, device, batch))
        )
        options.setdefault(
            "info_judge", Lazy(lambda: YesProbabilityJudge.from_folder(judges.info_judge, device, batch))
        )
    return TruthfulQATask(**options)


def toxigen(judges: JudgeConfig | None = None, **options: Any) -> ToxiGenTask:
    if "classifier" not in options:
        judges = judges or JudgeConfig()
        if not judges.toxicity_classifier:
            raise TaskUnavailable("toxigen needs --judges.toxicity_classifier (a local sequence-classifier folder)")
        path, device, batch = judges.toxicity_classifier, judges.device, judges.classifier_batch_size
        options["classifier"] = Lazy(lambda: ToxicityClassifier.from_folder(path, device, batch))
    return ToxiGenTask(**options)


def xstest(judges: JudgeConfig | None = None, **options: Any) -> XSTestTask:
    judges = judges or JudgeConfig()
    if judges.refusal == "judge" and "judge_backend" not in options:
        if not judges.judge or judges.judge == "length":
            raise TaskUnavailable("xstest with --judges.refusal judge needs --judges.judge (a model or endpoint)")
        options["judge_backend"] = Lazy(lambda: judge_backend(judges))
    return XSTestTask(**options)


def _alpaca(name: str, judges: JudgeConfig | None, options: dict[str, Any]) -> AlpacaEvalTask:
    if "judge" not in options:
        judges = judges or JudgeConfig()
        if not judges.judge:
            raise TaskUnavailable(f"{name} needs --judges.judge (a local model, endpoint, or length)")
        options["judge"] = Lazy(lambda: pairwise_judge(judges))
    return AlpacaEvalTask(name, **options)


def alpaca_eval(judges: JudgeConfig | None = None, **options: Any) -> AlpacaEvalTask:
    return _alpaca("alpaca_eval", judges, options)


def alpaca_eval_2(judges: JudgeConfig | None = None, **options: Any) -> AlpacaEvalTask:
    return _alpaca("alpaca_eval_2", judges, options)
