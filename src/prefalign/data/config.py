"""The data section of every training command's config, and loading records from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefalign.data.io import DropReport
from prefalign.data.sampling import train_test_split
from prefalign.data.schema import PreferencePair, Prompt, SFTExample


@dataclass
class DataConfig:
    source: str = "hh-rlhf"
    """A named data set (hh-rlhf, safe-rlhf, ultrafeedback, ultrafeedback-binarized, helpsteer), a file (.jsonl, .json,
    .csv, each optionally .gz; .parquet, .arrow), a datasets save_to_disk folder, or a hub id (where HF_HUB_OFFLINE
    allows). TRL's standard and conversational formats are recognised; map other columns with data.columns."""
    split: str = "train"
    """Split to read from a save_to_disk DatasetDict folder or a hub id."""
    eval_source: str | None = None
    """Held-out data of its own (same kinds as source); when it or eval_split is set, eval_size is not used."""
    eval_split: str | None = None
    """Split of eval_source (or of source, when eval_source is not set) to hold out, e.g. test."""
    path: str | None = None
    """File for a named source (default: its file under the data folder)."""
    data_dir: str | None = None
    """Data folder (default: $PREFALIGN_DATA_DIR, else ../shared/data beside the checkout)."""
    columns: dict[str, str] = field(default_factory=dict)
    """Column mapping, canonical field to your column, e.g. --data.columns prompt question chosen good rejected bad
    (YAML: {prompt: question, chosen: good, rejected: bad}). Fields: prompt, chosen, rejected, response, system,
    messages."""
    num_examples: int | None = None
    """Keep a deterministic subset of this many records (the papers use 60,908)."""
    eval_size: float = 0.1
    """Held-out part of source: a fraction in (0, 1) or a count (>= 1); not used with eval_source / eval_split."""
    max_length: int = 512
    """Maximum tokens of prompt + response."""
    max_prompt_length: int | None = None
    """Maximum prompt tokens (default: half of max_length); longer prompts lose their start."""
    strict: bool = False
    """Stop at the first malformed row (naming file, line and field) instead of dropping it."""
    seed: int = 0
    """Seed of the subset and of the train/held-out split."""
    options: dict[str, bool | int | float | str] = field(default_factory=dict)
    """Source-specific options, e.g. --data.options drop_dual_safe True (safe-rlhf) or --data.options score
    fine_grained (ultrafeedback); YAML: {drop_dual_safe: true}."""

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ValueError(f"data.max_length must be at least 2, got {self.max_length}")
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            raise ValueError("data.max_prompt_length must be below data.max_length")
        if self.eval_size < 0:
            raise ValueError(f"data.eval_size must be >= 0, got {self.eval_size}")
        unknown = set(self.columns) - {"prompt", "chosen", "rejected", "response", "system", "messages"}
        if unknown:
            raise ValueError(
                f"data.columns: unknown field(s) {sorted(unknown)}; map prompt, chosen, rejected, response, system or "
                f"messages to your column names"
            )


def _split(records: list, cfg: DataConfig) -> tuple[list, list]:
    if cfg.eval_size == 0:
        return records, []
    size: float | int = int(cfg.eval_size) if cfg.eval_size >= 1 else cfg.eval_size
    return train_test_split(records, size, seed=cfg.seed)


def _load_kwargs(cfg: DataConfig, source: str, split: str, limit: int | None, path: str | None) -> dict[str, Any]:
    from prefalign.data.sources import source_name

    kwargs: dict[str, Any] = dict(cfg.options)
    if path is not None:
        kwargs["path"] = path
    if source_name(source) is None:  # the user's own data: column mapping and split
        kwargs["split"] = split
        if cfg.columns:
            kwargs["columns"] = dict(cfg.columns)
    kwargs.update(strict=cfg.strict, limit=limit, seed=cfg.seed)
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


def load_train_and_held_out(
    cfg: DataConfig, loader: Callable[..., tuple[list, DropReport]]
) -> tuple[list, list, DropReport]:
    """(train, held-out, report) through ``loader(source, **kwargs)`` (one of the ``load_*_data`` functions).

    The held-out records are ``eval_source`` / ``eval_split`` read whole when either is set (their
    dropped rows join the report), else the ``eval_size`` part of ``source`` split off by seed.
    """
    with _with_data_dir(cfg):
        records, report = loader(cfg.source, **_load_kwargs(cfg, cfg.source, cfg.split, cfg.num_examples, cfg.path))
        if cfg.eval_source is None and cfg.eval_split is None:
            train, held_out = _split(records, cfg)
            return train, held_out, report
        source = cfg.eval_source or cfg.source
        path = cfg.path if cfg.eval_source is None else None
        held_out, held_report = loader(source, **_load_kwargs(cfg, source, cfg.eval_split or cfg.split, None, path))
    report.merge(held_report)
    return records, held_out, report


def load_pairs(cfg: DataConfig) -> tuple[list[PreferencePair], list[PreferencePair], DropReport]:
    """(train pairs, held-out pairs, drop report) for a data config."""
    from prefalign.data.sources import load_preference_data

    return load_train_and_held_out(cfg, load_preference_data)


def load_sft(cfg: DataConfig) -> tuple[list[SFTExample], list[SFTExample], DropReport]:
    """(train examples, held-out examples, drop report); a preference source gives its chosen responses."""
    from prefalign.data.sources import load_sft_data

    return load_train_and_held_out(cfg, load_sft_data)


def load_prompt_records(cfg: DataConfig) -> tuple[list[Prompt], list[Prompt], DropReport]:
    """(train prompts, held-out prompts, drop report) for a data config."""
    from prefalign.data.sources import load_prompt_data

    return load_train_and_held_out(cfg, load_prompt_data)
