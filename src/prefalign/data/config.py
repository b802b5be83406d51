"""The data section of every training command's config, and loading records from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefalign.data.io import DropReport
from prefalign.data.sampling import train_test_split
from prefalign.data.schema import PreferencePair, SFTExample


@dataclass
class DataConfig:
    source: str = "hh-rlhf"
    """A named data set (hh-rlhf, safe-rlhf, ultrafeedback, ultrafeedback-binarized, helpsteer) or a file path (.jsonl,
    .json, .parquet)."""
    path: str | None = None
    """File for a named source (default: its file under the data folder)."""
    data_dir: str | None = None
    """Data folder (default: $PREFALIGN_DATA_DIR, else ../shared/data beside the checkout)."""
    columns: dict[str, str] = field(default_factory=dict)
    """Column mapping for a generic file, e.g. {prompt: question, chosen: good, rejected: bad}."""
    num_examples: int | None = None
    """Keep a deterministic subset of this many records (the papers use 60,908)."""
    eval_size: float = 0.1
    """Held-out part: a fraction in (0, 1) or a count (>= 1)."""
    max_length: int = 512
    """Maximum tokens of prompt + response."""
    max_prompt_length: int | None = None
    """Maximum prompt tokens (default: half of max_length); longer prompts lose their start."""
    strict: bool = False
    """Stop at the first malformed row (naming file, line and field) instead of dropping it."""
    seed: int = 0
    """Seed of the subset and of the train/held-out split."""
    options: dict[str, Any] = field(default_factory=dict)
    """Source-specific options, e.g. {drop_dual_safe: true} for safe-rlhf or {score: fine_grained} for ultrafeedback."""

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ValueError(f"data.max_length must be at least 2, got {self.max_length}")
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            raise ValueError("data.max_prompt_length must be below data.max_length")
        if self.eval_size < 0:
            raise ValueError(f"data.eval_size must be >= 0, got {self.eval_size}")


def _split(records: list, cfg: DataConfig) -> tuple[list, list]:
    if cfg.eval_size == 0:
        return records, []
    size: float | int = int(cfg.eval_size) if cfg.eval_size >= 1 else cfg.eval_size
    return train_test_split(records, size, seed=cfg.seed)


def _load_kwargs(cfg: DataConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(cfg.options)
    if cfg.path is not None:
        kwargs["path"] = cfg.path
    if cfg.columns:
        kwargs["columns"] = dict(cfg.columns)
    kwargs.update(strict=cfg.strict, limit=cfg.num_examples, seed=cfg.seed)
    return kwargs


def _with_data_dir(cfg: DataConfig):
    import contextlib
    import os

    @contextlib.contextmanager
    def scope():
        if cfg.data_dir is None:
            yield
            return
        old = os.environ.get("PREFALIGN_DATA_DIR")
        os.environ["PREFALIGN_DATA_DIR"] = cfg.data_dir
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("PREFALIGN_DATA_DIR", None)
            else:
                os.environ["PREFALIGN_DATA_DIR"] = old

    return scope()


def load_pairs(cfg: DataConfig) -> tuple[list[PreferencePair], list[PreferencePair], DropReport]:
    """(train pairs, held-out pairs, drop report) for a data config."""
    from prefalign.data.sources import load_preference_data

    with _with_data_dir(cfg):
        pairs, report = load_preference_data(cfg.source, **_load_kwargs(cfg))
    train, held_out = _split(pairs, cfg)
    return train, held_out, report


def load_sft(cfg: DataConfig) -> tuple[list[SFTExample], list[SFTExample], DropReport]:
    """(train examples, held-out examples, drop report); a preference source gives its chosen responses."""
    from prefalign.data.sources import load_sft_data

    with _with_data_dir(cfg):
        examples, report = load_sft_data(cfg.source, **_load_kwargs(cfg))
    train, held_out = _split(examples, cfg)
    return train, held_out, report
