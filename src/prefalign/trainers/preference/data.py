"""Where the offline methods' records come from, and the JSONL pair files of iterative DPO.

:func:`load_preference_records` gives pairs (or rankings for RRHF / PRO where the source rates
more than two responses), with the PKU-SafeRLHF dual-safe / dual-unsafe filters of
:func:`data_with_filters` (Xu et al. Table 2); :func:`sft_examples` the SFT data of "SFT before
DPO" ("SFT (Safe)" on PKU-SafeRLHF). :func:`write_pairs` / :func:`read_pairs` keep a round's pairs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from prefalign.atomic import write_jsonl_atomic
from prefalign.config import ConfigError
from prefalign.data.config import DataConfig, load_pairs, load_train_and_held_out
from prefalign.data.io import DropReport
from prefalign.data.schema import (
    DataError,
    Message,
    PreferencePair,
    RankedResponses,
    SFTExample,
)

Records = list[PreferencePair] | list[RankedResponses]


def data_with_filters(data: DataConfig, drop_dual_safe: bool, drop_dual_unsafe: bool) -> DataConfig:
    """``data`` with the dual-safe / dual-unsafe filters of Xu et al. passed to the PKU-SafeRLHF adapter."""
    if not (drop_dual_safe or drop_dual_unsafe):
        return data
    from prefalign.data.sources import source_name

    if source_name(data.source) != "safe-rlhf":
        raise ConfigError(f"drop_dual_safe / drop_dual_unsafe need data.source safe-rlhf (got {data.source!r})")
    options = {**data.options, "drop_dual_safe": drop_dual_safe, "drop_dual_unsafe": drop_dual_unsafe}
    return dataclasses.replace(data, options=options)


def load_preference_records(data: DataConfig, loss: str) -> tuple[Records, Records, DropReport]:
    """(train, held-out, report): pairs for DPO; for RRHF / PRO all rated responses where the source has them."""
    from prefalign.data.sources import RANKED_SOURCES, load_ranked_data, source_name

    if loss == "dpo" or source_name(data.source) not in RANKED_SOURCES:
        train, held_out, report = load_pairs(data)
        if loss != "dpo":
            train, held_out = [p.as_ranked() for p in train], [p.as_ranked() for p in held_out]
        return train, held_out, report
    return load_train_and_held_out(data, load_ranked_data)  # the same split as load_pairs


def sft_examples(records: Sequence[PreferencePair | RankedResponses]) -> list[SFTExample]:
    """SFT data from preference data: every safe response for PKU-SafeRLHF ("SFT (Safe)"), else the chosen / best
    one."""
    from prefalign.data.sources.safe_rlhf import safe_sft_examples

    if records and all(isinstance(r, PreferencePair) and "chosen_safe" in r.metadata for r in records):
        return safe_sft_examples(records)
    out = []
    for r in records:
        best = r.chosen if isinstance(r, PreferencePair) else r.responses[0]
        out.append(SFTExample(list(r.prompt), best, {**r.metadata, "from": "chosen"}))
    return out


def pair_to_row(pair: PreferencePair) -> dict:
    return {
        "prompt": [m.to_dict() for m in pair.prompt],
        "chosen": pair.chosen,
        "rejected": pair.rejected,
        "metadata": pair.metadata,
    }


def write_pairs(path: Path, pairs: Sequence[PreferencePair]) -> Path:
    """A pair file (one JSON object per line: prompt messages, chosen, rejected, metadata), written atomically."""
    return write_jsonl_atomic(path, [pair_to_row(p) for p in pairs])


def read_pairs(path: Path) -> list[PreferencePair]:
    """The pairs of a file written by :func:`write_pairs`; a malformed line raises DataError naming file, line and
    field."""
    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"not JSON ({error.msg})", source=str(path), line=number) from None
        if not isinstance(row, dict):
            raise DataError("expected a JSON object", source=str(path), line=number)
        for key in ("prompt", "chosen", "rejected"):
            if key not in row:
                raise DataError("missing", source=str(path), line=number, field=key)
        try:
            prompt = [Message.from_dict(m) for m in row["prompt"]]
            pairs.append(PreferencePair(prompt, row["chosen"], row["rejected"], row.get("metadata", {})))
        except DataError as error:
            raise DataError(error.reason, source=str(path), line=number, field=error.field) from None
        except KeyError as error:
            raise DataError(
                "a prompt message lacks this key", source=str(path), line=number, field=f"prompt.{error.args[0]}"
            ) from None
        except (TypeError, AttributeError, ValueError) as error:
            raise DataError(str(error), source=str(path), line=number) from None
    return pairs
