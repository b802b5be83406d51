"""Judges and classifiers of the Ivison et al. (2024) suite as settings (``prefalign eval --judges.*``).

Nothing here is hard-wired to a model: AlpacaEval's pairwise judge and XSTest's optional refusal judge
are the project's judge (:mod:`prefalign.evaluation.judge`) on a local model or an OpenAI-compatible
endpoint; TruthfulQA's truth / informativeness judges and ToxiGen's toxicity classifier are local model
folders the user gives. A task whose judge is not set is skipped with a line saying which setting it
needs. The models are loaded on first use and shared by the tasks of one run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prefalign.data.schema import Prompt
from prefalign.evaluation.judge import DEFAULT_TEMPLATE, HFJudgeBackend, HTTPJudgeBackend, PairwiseJudgement


@dataclass
class JudgeConfig:
    judge: str | None = None
    """The pairwise judge of AlpacaEval 1/2 (and XSTest's refusal judge with refusal=judge): a local model
    folder or embedded name (e.g. smollm2-135m-instruct), "endpoint" (an OpenAI-compatible endpoint:
    endpoint_base_url / endpoint_model, else $PREFALIGN_JUDGE_BASE_URL / $PREFALIGN_JUDGE_MODEL), or "length"
    (prefers the longer response: an offline diagnostic of the length correction, not a quality judge).
    Default None: the AlpacaEval tasks are skipped. Paper: GPT-4 (AlpacaEval 1) and GPT-4 Turbo (AlpacaEval 2)
    through alpaca_eval's annotator prompts; here the project's pairwise template (judge_template), both
    orders, a tie when they disagree, so figures are comparable only between runs with the same judge."""
    judge_template: str | None = None
    """Pairwise judge prompt with {query}, {response_a}, {response_b} (default: prefalign.evaluation.judge's)."""
    endpoint_base_url: str | None = None
    """Base URL of the OpenAI-compatible judge endpoint (judge=endpoint)."""
    endpoint_model: str | None = None
    """Model name sent to the endpoint (judge=endpoint)."""
    judge_mode: str = "generate"
    """How a local judge gives its verdict: generate (writes its comparison and verdict, greedy) or logprob (the reply
    is started with "More helpful:" and the verdict is whichever of A / B has the higher next-token probability: one
    forward pass per order, never unparseable; AlpacaEval 2's own annotator also reads its verdict from token
    probabilities)."""
    judge_max_new_tokens: int = 256
    """Tokens a local judge may write per verdict (judge_mode=generate)."""
    judge_batch_size: int = 8
    """Conversations per generate call of a local judge."""
    refusal: str = "string-match"
    """XSTest's refusal classifier: string-match (XSTest's own prefix rules, offline; the default) or judge
    (the judge above with XSTest's three-class prompt; partial refusals count as refusals). Paper: an LLM
    classification (GPT-4 with XSTest's prompt, as open-instruct does); the XSTest authors report that
    string matching misses indirect and partial refusals, so it reads refusal rates low."""
    truth_judge: str | None = None
    """TruthfulQA truthfulness judge: a local causal-LM folder answering "Q: ..\\nA: ..\\nTrue:" with yes/no
    (e.g. allenai/truthfulqa-truth-judge-llama2-7B). Default None: TruthfulQA is skipped. Paper: open-instruct's
    fine-tuned judges (Lin et al.'s GPT-3 "GPT-judge", later retrained on Llama-2-7B as the models above); another
    judge gives other figures."""
    info_judge: str | None = None
    """TruthfulQA informativeness judge ("Helpful:" prompt), e.g. allenai/truthfulqa-info-judge-llama2-7B."""
    toxicity_classifier: str | None = None
    """ToxiGen classifier: a local sequence-classification folder whose label 1 is toxic (e.g.
    tomh/toxigen_roberta, the paper's). Default None: ToxiGen is skipped."""
    classifier_batch_size: int = 16
    """Texts per forward pass of the TruthfulQA judges and the ToxiGen classifier."""
    device: str = "auto"
    """Where local judges run: auto (cuda when available), cpu or cuda."""

    def __post_init__(self) -> None:
        if self.judge_mode not in ("generate", "logprob"):
            raise ValueError(f"judges.judge_mode must be generate or logprob, got {self.judge_mode!r}")
        if self.refusal not in ("string-match", "judge"):
            raise ValueError(f"judges.refusal must be string-match or judge, got {self.refusal!r}")
        if self.judge_batch_size < 1 or self.classifier_batch_size < 1 or self.judge_max_new_tokens < 1:
            raise ValueError("judges: batch sizes and judge_max_new_tokens must be positive")

    @property
    def template(self) -> str:
        return self.judge_template or DEFAULT_TEMPLATE


def judge_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class LengthPairwiseJudge:
    """Prefers the longer response (in characters); equal lengths are a tie. Deterministic and offline.

    Not a quality judge: a judge with nothing but a length bias, for which the length-controlled win
    rate should come out near 50% whatever the raw win rate is. It answers both orders consistently.
    """

    def judge(
        self, queries: Sequence[str | Prompt], candidates: Sequence[str], baselines: Sequence[str]
    ) -> list[PairwiseJudgement]:
        if not len(queries) == len(candidates) == len(baselines):
            raise ValueError(f"{len(queries)} queries, {len(candidates)} candidates, {len(baselines)} baselines")
        out = []
        for cand, base in zip(candidates, baselines):
            outcome = "win" if len(cand) > len(base) else "loss" if len(cand) < len(base) else "tie"
            first = {"win": "A", "loss": "B", "tie": None}[outcome]
            second = {"win": "B", "loss": "A", "tie": None}[outcome]
            out.append(PairwiseJudgement(first, second, outcome, ("", "")))
        return out


class TaskUnavailable(ValueError):
    """A task cannot run with these settings (its judge or classifier is not set); the runner skips it in a group."""


class Lazy:
    """Builds its object on first use: judges are loaded only for tasks that get to scoring."""

    def __init__(self, build):
        self._build, self._object = build, None

    @property
    def target(self):
        if self._object is None:
            self._object = self._build()
        return self._object

    def __call__(self, *args, **kwargs):
        return self.target(*args, **kwargs)

    def judge(self, *args, **kwargs):
        return self.target.judge(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self.target.generate(*args, **kwargs)


_CACHE: dict[tuple[str, str], Any] = {}


def load_local_lm(name_or_path: str, device: str) -> tuple[Any, Any]:
    """(model, tokenizer) of a local causal LM (or embedded name), loaded once per run."""
    from prefalign.models.load import ModelConfig, load_causal_lm, load_tokenizer

    key = ("lm", name_or_path)
    if key not in _CACHE:
        cfg = ModelConfig(name_or_path=name_or_path)
        model = load_causal_lm(cfg).to(judge_device(device)).eval()
        _CACHE[key] = (model, load_tokenizer(cfg))
    return _CACHE[key]


def judge_backend(config: JudgeConfig):
    """The chat backend of ``config.judge`` (a local model or an endpoint)."""
    if config.judge == "endpoint":
        from prefalign.evaluation.http_client import ChatCompletionClient, EndpointSettings

        settings = EndpointSettings.from_env(model=config.endpoint_model, base_url=config.endpoint_base_url)
        return HTTPJudgeBackend(ChatCompletionClient(settings), max_tokens=config.judge_max_new_tokens)
    model, tokenizer = load_local_lm(config.judge, config.device)
    if config.judge_mode == "logprob":
        return HFVerdictBackend(model, tokenizer, batch_size=config.judge_batch_size)
    return HFJudgeBackend(
        model, tokenizer, max_new_tokens=config.judge_max_new_tokens, batch_size=config.judge_batch_size
    )


class HFVerdictBackend:
    """A local causal LM read, not sampled: after the judge prompt (chat template), the reply is started with
    ``reply_prefix`` and the verdict is the letter among ``letters`` with the highest next-token logit
    (:func:`prefalign.evaluation.choice_scoring.choose_letters`). Returns ``"<reply_prefix> <letter>"``, which
    :func:`prefalign.evaluation.judge.parse_verdict` reads."""

    def __init__(
        self, model: Any, tokenizer: Any, *, reply_prefix: str = "More helpful:", letters=("A", "B"), batch_size=8
    ):
        self.model, self.tokenizer = model, tokenizer
        self.reply_prefix, self.letters, self.batch_size = reply_prefix, tuple(letters), batch_size

    def generate(self, conversations: Sequence[list[dict[str, str]]]) -> list[str]:
        from prefalign.data.schema import Message
        from prefalign.evaluation.choice_scoring import choose_letters

        prompts = [Prompt([Message(m["role"], m["content"]) for m in c]) for c in conversations]
        chosen = choose_letters(
            self.model,
            self.tokenizer,
            prompts,
            self.letters,
            answer_prefix=self.reply_prefix,
            batch_size=self.batch_size,
        )
        return [f"{self.reply_prefix} {letter}" for letter in chosen]


def pairwise_judge(config: JudgeConfig):
    """The pairwise judge of ``config`` (``judge`` must be set)."""
    from prefalign.evaluation.judge import PairwiseJudge

    if not config.judge:
        raise ValueError("no pairwise judge: set --judges.judge")
    if config.judge == "length":
        return LengthPairwiseJudge()
    return PairwiseJudge(judge_backend(config), template=config.template, on_unparseable="tie")


class YesProbabilityJudge:
    """P(" yes") of a causal LM after a plain-text prompt (no chat template), as TruthfulQA's judges are used."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 16):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        ids = tokenizer(" yes", add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError("the judge tokenizer cannot encode ' yes'")
        self.yes_id = ids[-1]

    @classmethod
    def from_folder(cls, path: str, device: str = "auto", batch_size: int = 16) -> YesProbabilityJudge:
        model, tokenizer = load_local_lm(path, device)
        return cls(model, tokenizer, batch_size=batch_size)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> list[float]:
        tok, out = self.tokenizer, []
        device = next(self.model.parameters()).device
        for start in range(0, len(texts), self.batch_size):
            chunk = [tok(t)["input_ids"] for t in texts[start : start + self.batch_size]]
            width = max(len(c) for c in chunk)
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            ids = torch.tensor([[pad] * (width - len(c)) + c for c in chunk], device=device)  # (B, T) left-padded
            mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk], device=device)
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits[:, -1].float()
            out.extend(torch.softmax(logits, dim=-1)[:, self.yes_id].tolist())
        return out


class ToxicityClassifier:
    """P(toxic) from a sequence classifier whose label 1 is toxic (ToxiGen's RoBERTa classifier)."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 16, max_length: int = 512):
        if model.config.num_labels < 2:
            raise ValueError(f"the toxicity classifier has {model.config.num_labels} label(s); expected 2")
        self.model, self.tokenizer, self.batch_size, self.max_length = model, tokenizer, batch_size, max_length

    @classmethod
    def from_folder(cls, path: str, device: str = "auto", batch_size: int = 16) -> ToxicityClassifier:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        key = ("classifier", path)
        if key not in _CACHE:
            model = AutoModelForSequenceClassification.from_pretrained(path).to(judge_device(device)).eval()
            _CACHE[key] = (model, AutoTokenizer.from_pretrained(path))
        model, tokenizer = _CACHE[key]
        return cls(model, tokenizer, batch_size=batch_size)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> list[float]:
        device, out = next(self.model.parameters()).device, []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            ).to(device)
            logits = self.model(**batch).logits.float()  # (B, num_labels)
            out.extend(torch.softmax(logits, dim=-1)[:, 1].tolist())
        return out
