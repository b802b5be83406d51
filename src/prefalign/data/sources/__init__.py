"""One adapter per public data set, and a registry that picks one by name or by file.

``load_preference_data("hh-rlhf")`` returns ``(pairs, report)``: the canonical
:class:`~prefalign.data.schema.PreferencePair` records and the
:class:`~prefalign.data.io.DropReport` of malformed (dropped) and filtered (skipped) rows.
Anything that is not a registered name is read as the user's own data (a file or ``save_to_disk``
folder in any format of :mod:`prefalign.data.formats`, a hub id where the user's environment allows
the hub, a ``datasets.Dataset`` or a list of dicts): TRL's standard and conversational formats are
recognised, anything else goes through a column mapping (:mod:`prefalign.data.sources.jsonl`).

Names: ``hh-rlhf``, ``safe-rlhf``, ``ultrafeedback`` (raw ratings), ``ultrafeedback-binarized``,
``helpsteer``. Options beyond ``path``, ``strict``, ``limit`` and ``seed`` go to the adapter
(e.g. ``score="fine_grained"``, ``pairing="best_vs_worst"``, ``drop_dual_unsafe=True``).

SFT data from a named set is its chosen responses, the "SFT on the preference data" of Xu et al.
(2024, Table 2), except for ``safe-rlhf``, whose SFT data is every safe response ("SFT (Safe)").
Prompts from a named set are its distinct prompts, for PPO rollouts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prefalign.data.formats import FORMATS_HELP, hub_offline, looks_like_hub_id
from prefalign.data.io import DropReport
from prefalign.data.schema import PreferencePair, Prompt, RankedResponses, SFTExample
from prefalign.data.sources.helpsteer import load_helpsteer, load_helpsteer_ranked
from prefalign.data.sources.hh_rlhf import hh_sft_examples, load_hh_rlhf
from prefalign.data.sources.jsonl import apply_limit, load_pairs, load_prompts, load_sft_examples
from prefalign.data.sources.safe_rlhf import load_safe_rlhf, safe_sft_examples
from prefalign.data.sources.ultrafeedback import (
    load_ultrafeedback,
    load_ultrafeedback_binarized,
    load_ultrafeedback_ranked,
)

PREFERENCE_SOURCES: dict[str, Callable[..., list[PreferencePair]]] = {
    "hh-rlhf": load_hh_rlhf,
    "safe-rlhf": load_safe_rlhf,
    "ultrafeedback": load_ultrafeedback,
    "ultrafeedback-binarized": load_ultrafeedback_binarized,
    "helpsteer": load_helpsteer,
}
RANKED_SOURCES: dict[str, Callable[..., list[RankedResponses]]] = {
    "ultrafeedback": load_ultrafeedback_ranked,
    "helpsteer": load_helpsteer_ranked,
}
ALIASES = {"anthropic-hh": "hh-rlhf", "pku-saferlhf": "safe-rlhf", "pku-safe-rlhf": "safe-rlhf"}


def source_name(name_or_path: Any) -> str | None:
    """The registered name ``name_or_path`` stands for (case and ``_``/``-`` ignored), else ``None``."""
    if not isinstance(name_or_path, str):
        return None
    key = name_or_path.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    return key if key in PREFERENCE_SOURCES else None


def _check_user_source(name_or_path: Any) -> None:
    if isinstance(name_or_path, (str, Path)) and not Path(name_or_path).exists():
        hub = isinstance(name_or_path, str) and looks_like_hub_id(name_or_path)
        if hub and not hub_offline():
            return  # tried on the hub by the reader
        why = " (not tried on the hub: HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set)" if hub else ""
        raise ValueError(
            f"{str(name_or_path)!r} is neither a data set name ({', '.join(PREFERENCE_SOURCES)}) nor an existing "
            f"file or folder{why}; files: {FORMATS_HELP}"
        )


def load_preference_data(
    name_or_path: Any,
    *,
    path: str | Path | None = None,
    columns: Mapping[str, str] | None = None,
    metadata_columns: Sequence[str] = (),
    strict: bool = False,
    limit: int | None = None,
    seed: int = 0,
    split: str | None = None,
    **options: Any,
) -> tuple[list[PreferencePair], DropReport]:
    """Preference pairs by data set name (``path`` overrides its default file) or from the user's own data."""
    report = DropReport()
    name = source_name(name_or_path)
    if name is not None:
        pairs = PREFERENCE_SOURCES[name](path, strict=strict, report=report, limit=limit, seed=seed, **options)
        return pairs, report
    _check_user_source(name_or_path)
    return load_pairs(
        name_or_path,
        columns=columns,
        metadata_columns=metadata_columns,
        strict=strict,
        report=report,
        limit=limit,
        seed=seed,
        split=split,
        **options,
    ), report


def load_sft_data(
    name_or_path: Any,
    *,
    path: str | Path | None = None,
    columns: Mapping[str, str] | None = None,
    metadata_columns: Sequence[str] = (),
    strict: bool = False,
    limit: int | None = None,
    seed: int = 0,
    split: str | None = None,
    **options: Any,
) -> tuple[list[SFTExample], DropReport]:
    """SFT examples: a named set's chosen (for ``safe-rlhf``: safe) responses, or the user's own data."""
    name = source_name(name_or_path)
    if name is None:
        _check_user_source(name_or_path)
        report = DropReport()
        return load_sft_examples(
            name_or_path,
            columns=columns,
            metadata_columns=metadata_columns,
            strict=strict,
            report=report,
            limit=limit,
            seed=seed,
            split=split,
            **options,
        ), report
    pairs, report = load_preference_data(name, path=path, strict=strict, **options)
    examples = safe_sft_examples(pairs) if name == "safe-rlhf" else hh_sft_examples(pairs)
    report.kept += len(examples) - len(pairs)
    return apply_limit(examples, limit, seed, report), report


def prompts_from_pairs(pairs: Sequence[PreferencePair | RankedResponses]) -> list[Prompt]:
    """The distinct prompts of a list of pairs (first occurrence kept, in order)."""
    seen, out = set(), []
    for pair in pairs:
        key = tuple((m.role, m.content) for m in pair.prompt)
        if key not in seen:
            seen.add(key)
            metadata = {k: pair.metadata[k] for k in ("source", "line") if k in pair.metadata}
            out.append(Prompt(list(pair.prompt), metadata))
    return out


def load_prompt_data(
    name_or_path: Any,
    *,
    path: str | Path | None = None,
    columns: Mapping[str, str] | None = None,
    metadata_columns: Sequence[str] = (),
    strict: bool = False,
    limit: int | None = None,
    seed: int = 0,
    split: str | None = None,
    **options: Any,
) -> tuple[list[Prompt], DropReport]:
    """Prompts for rollouts: a named set's distinct prompts, or the user's own prompt file."""
    name = source_name(name_or_path)
    if name is None:
        _check_user_source(name_or_path)
        report = DropReport()
        return load_prompts(
            name_or_path,
            columns=columns,
            metadata_columns=metadata_columns,
            strict=strict,
            report=report,
            limit=limit,
            seed=seed,
            split=split,
            **options,
        ), report
    pairs, report = load_preference_data(name, path=path, strict=strict, **options)
    prompts = prompts_from_pairs(pairs)
    if len(prompts) < len(pairs):
        report.skip("repeated prompt", len(pairs) - len(prompts))
    report.kept += len(prompts) - len(pairs)
    return apply_limit(prompts, limit, seed, report), report


def load_ranked_data(
    name_or_path: Any,
    *,
    path: str | Path | None = None,
    strict: bool = False,
    limit: int | None = None,
    seed: int = 0,
    **options: Any,
) -> tuple[list[RankedResponses], DropReport]:
    """Rankings for RRHF / PRO: all rated responses where the set has them, else each pair as a ranking of two."""
    name = source_name(name_or_path)
    if name in RANKED_SOURCES:
        report = DropReport()
        return RANKED_SOURCES[name](path, strict=strict, report=report, limit=limit, seed=seed, **options), report
    pairs, report = load_preference_data(name_or_path, path=path, strict=strict, limit=limit, seed=seed, **options)
    return [pair.as_ranked() for pair in pairs], report


__all__ = [
    "PREFERENCE_SOURCES",
    "RANKED_SOURCES",
    "load_preference_data",
    "load_prompt_data",
    "load_ranked_data",
    "load_sft_data",
    "prompts_from_pairs",
    "source_name",
]
