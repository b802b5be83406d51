"""AlpacaEval 1 and length-controlled AlpacaEval 2 (instruction following in Ivison et al., 2024, App. D).

The 805 AlpacaEval instructions go to the model as they are (one user turn, greedy decoding); each
response is compared with a reference system's output on the same instruction by the pairwise judge
of ``--judges.judge`` (:mod:`prefalign.evaluation.judge`: both orders, a tie when they disagree; or a
local model, an endpoint, or the offline length judge). Outcomes become AlpacaEval preferences (model
win 2, tie 1.5, loss 1) and :mod:`prefalign.evaluation.length_controlled` gives the win rate with ties
and the length-controlled win rate.

- ``alpaca_eval`` (AlpacaEval 1): reference ``text_davinci_003``; ``score`` = win rate / 100.
- ``alpaca_eval_2``: reference ``gpt4_1106_preview`` (GPT-4 Turbo); ``score`` = LC win rate / 100.

Departures: the judge is not alpaca_eval's GPT-4 annotator (its prompt, its model, its probability-
weighted preferences), so figures compare runs with the same judge, not the leaderboard; the LC GLM
lacks the leaderboard's regularisation towards gamed baselines (see :mod:`.length_controlled`); the
instruction difficulty term is used only when ``instruction_difficulty`` names the package's
``instruction_difficulty.csv`` (columns: index, instruction_difficulty).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefalign.data.schema import DataError, Prompt
from prefalign.data.sources.benchmarks import load_alpaca_eval
from prefalign.evaluation.length_controlled import length_controlled_win_rate, preference_of, win_rate

REFERENCES = {"alpaca_eval": "text_davinci_003", "alpaca_eval_2": "gpt4_1106_preview"}


def read_instruction_difficulty(path: str | Path) -> dict[int, float]:
    """alpaca_eval's ``instruction_difficulty.csv``: instruction index -> difficulty."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (alpaca_eval's instruction_difficulty.csv)")
    out = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if line == 1 and not row[0].strip().lstrip("-").isdigit():
                continue  # header
            try:
                out[int(row[0])] = float(row[-1])
            except (ValueError, IndexError):
                raise DataError("expected 'index,difficulty'", source=str(path), line=line) from None
    return out


class AlpacaEvalTask:
    category = "instruction following"
    decoding = {"temperature": 0.0, "max_new_tokens": 2048}

    def __init__(
        self,
        name: str = "alpaca_eval_2",
        *,
        judge: Any = None,
        path: str | Path | None = None,
        reference: str | None = None,
        instruction_difficulty: str | Path | None = None,
    ):
        if name not in REFERENCES:
            raise ValueError(f"AlpacaEval task must be one of {sorted(REFERENCES)}, got {name!r}")
        self.name, self.judge, self.path = name, judge, path
        self.reference = reference or REFERENCES[name]
        self.difficulty = read_instruction_difficulty(instruction_difficulty) if instruction_difficulty else None

    def prompts(self, limit: int | None = None) -> list[Prompt]:
        prompts = load_alpaca_eval(self.reference, self.path)
        return prompts[:limit] if limit is not None else prompts

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[dict[str, Any]]:
        """Per response: the judge's ``outcome`` for the model, its ``preference``, both lengths."""
        if self.judge is None:
            raise ValueError(f"{self.name} needs a pairwise judge: set --judges.judge")
        baselines = [p.metadata["reference_output"] for p in prompts]
        judgements = self.judge.judge(list(prompts), list(responses), baselines)
        out = []
        for prompt, response, baseline, j in zip(prompts, responses, baselines, judgements):
            preference = preference_of(j.outcome)
            out.append(
                {
                    "reward": preference - 1.0,
                    "outcome": j.outcome,
                    "preference": preference,
                    "index": int(prompt.metadata["id"]),
                    "model_length": len(response),
                    "baseline_length": len(baseline),
                    "verdicts": [j.verdict_candidate_first, j.verdict_candidate_second],
                }
            )
        return out

    def aggregate(self, results: Sequence[dict[str, Any]]) -> dict[str, float]:
        """``win_rate`` and ``length_controlled_win_rate`` (percent), counts; ``score`` as the module says."""
        preferences = [r["preference"] for r in results]
        metrics = win_rate(preferences)
        difficulty = None
        if self.difficulty is not None:
            missing = sorted({r["index"] for r in results} - set(self.difficulty))
            if missing:
                raise ValueError(f"instruction_difficulty lacks instructions {missing[:5]}")
            difficulty = [self.difficulty[r["index"]] for r in results]
        fit = length_controlled_win_rate(
            preferences, [r["model_length"] for r in results], [r["baseline_length"] for r in results], difficulty
        )
        metrics.update(
            length_controlled_win_rate=fit.length_controlled_win_rate,
            lc_standard_error=fit.lc_standard_error,
            lc_c=fit.c,
            **{f"lc_weight/{k}": v for k, v in fit.weights.items()},
            mean_model_length=sum(r["model_length"] for r in results) / len(results),
            mean_baseline_length=sum(r["baseline_length"] for r in results) / len(results),
        )
        headline = metrics["length_controlled_win_rate"] if self.name == "alpaca_eval_2" else metrics["win_rate"]
        return {"score": headline / 100.0, **metrics}
