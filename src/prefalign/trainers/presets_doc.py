"""``docs/presets.md``: every preset's settings with their sources, generated from the code.

For each command with presets (sft, rm, ppo, ppo-ablation, dpo, dpo-iter, eval), each preset gets a
table of every setting it sets or that differs from the command's defaults once resolved: the dotted
field, the resolved value, the default and the source (paper with section or table, or "ours" with
the reason). PPO's sources live beside its presets (:mod:`prefalign.trainers.ppo.presets`); the other
commands' are below. A test regenerates the page and compares it with ``docs/presets.md``, and checks
that every row has a source and every source a row, so the page, the sources and the code cannot drift.

    python -m prefalign.trainers.presets_doc            # rewrite docs/presets.md
    python -m prefalign.trainers.presets_doc --check    # exit 1 when the page is out of date

The study's presets (``prefalign study``, a layer above the trainers) are not covered here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefalign.atomic import write_text_atomic
from prefalign.config import build_config, to_dict
from prefalign.trainers.ppo import presets as ppo_presets

#: command -> (module, config class name)
COMMANDS: dict[str, tuple[str, str]] = {
    "sft": ("prefalign.trainers.sft", "SFTConfig"),
    "rm": ("prefalign.trainers.reward_model", "RewardModelConfig"),
    "ppo": ("prefalign.trainers.ppo.config", "PPOConfig"),
    "ppo-ablation": ("prefalign.trainers.ppo.ablation", "PPOAblationConfig"),
    "dpo": ("prefalign.trainers.preference.dpo_config", "DPOConfig"),
    "dpo-iter": ("prefalign.trainers.preference.iterative_config", "IterativeDPOConfig"),
    "eval": ("prefalign.evaluation.runner", "EvalConfig"),
}

_SMOKE = "ours: a smoke run on a tiny random model that finishes in seconds"
_XU_DPO = "Xu et al. section 4 and App. A (DPO: lr 1e-6, beta 0.1)"
_TULU2_SFT = "Tulu 2 SFT recipe (Ivison et al. 2023), the SFT stage Ivison et al. 2024 build on"

#: command -> preset -> dotted field -> source; the key "*" gives the source of every row of that preset.
SOURCES: dict[str, dict[str, dict[str, str]]] = {
    "ppo": ppo_presets.SOURCES,
    "ppo-ablation": {
        "xu": {
            **{f"base.{k}": v for k, v in ppo_presets.SOURCES["xu"].items()},
            "small_batch_size": "Xu et al. Table 3 (batch 64 in the first two rows)",
            "large_batch_size": "Xu et al. Table 3 (batch 512 from the large-batch row on)",
        },
        "tiny": {"*": _SMOKE},
    },
    "sft": {
        "ivison": {
            "optim.learning_rate": _TULU2_SFT + " (lr 2e-5)",
            "optim.warmup_ratio": _TULU2_SFT + " (3% warm-up)",
            "batch.global_batch_size": _TULU2_SFT + " (batch 128)",
            "batch.epochs": _TULU2_SFT + " (2 epochs)",
            "data.max_length": "ours: a length that fits one accelerator; the recipe's own is longer",
        },
        "xu-sft-on-preferences": {
            "*": "ours: Xu et al. Table 2 trains SFT on the chosen responses before DPO but give no settings for it; "
            "the SFT defaults at batch 64, 1 epoch",
        },
    },
    "rm": {
        "ivison": {"*": "Ivison et al. App. F (reward model: 1 epoch, lr 1e-5, 3% warm-up, decay to 1e-6, batch 512)"},
        "xu": {
            "*": "ours: Xu et al. give no reward-model settings; the ivison rate without its floor, at the batch 64 of "
            "Xu et al.'s small-batch PPO, 1 epoch",
        },
    },
    "dpo": {
        "xu-dialogue": {
            "loss": _XU_DPO,
            "beta": _XU_DPO,
            "optim.learning_rate": _XU_DPO,
            "batch.epochs": "Xu et al. section 4 (2 epochs on the dialogue data)",
        },
        "xu-code": {
            "loss": _XU_DPO,
            "beta": _XU_DPO,
            "optim.learning_rate": _XU_DPO,
            "batch.epochs": "Xu et al. section 6 (1 epoch on code)",
        },
        "xu-safe": {
            "loss": _XU_DPO,
            "beta": _XU_DPO,
            "optim.learning_rate": _XU_DPO,
            "batch.epochs": "Xu et al. section 4 (2 epochs on the dialogue data)",
            "data.source": "Xu et al. Table 2 (SafeRLHF)",
            "drop_dual_unsafe": "Xu et al. Table 2, last rows (DPO without the pairs where both responses are unsafe)",
            "sft_first.enabled": "Xu et al. Table 2, last rows (SFT on the safe responses first)",
        },
        "ivison": {
            "loss": "Ivison et al. App. F (DPO)",
            "beta": "Ivison et al. App. F (Tulu 2 DPO recipe: beta 0.1)",
            "optim.learning_rate": "Ivison et al. App. F (Tulu 2 DPO recipe: lr 5e-7)",
            "optim.warmup_ratio": "Ivison et al. App. F (10% linear warm-up)",
            "optim.schedule": "Ivison et al. App. F (linear decay after the warm-up)",
            "batch.epochs": "Ivison et al. App. F (3 epochs)",
            "batch.global_batch_size": "ours: the batch of the sft ivison preset (Tulu 2 SFT); App. F as we read it "
            "gives no DPO batch",
            "data.max_length": "ours: the length of the sft ivison preset; App. F as we read it gives none",
        },
        "rrhf": {
            "loss": "Xu et al. Table 4 (RRHF, a reward-free ranking baseline)",
            "optim.learning_rate": "ours: the DPO presets' rate; the RRHF paper tunes larger models",
        },
        "pro": {
            "loss": "Xu et al. Table 4 (PRO, a reward-free ranking baseline)",
            "optim.learning_rate": "ours: the DPO presets' rate; the PRO paper tunes larger models",
        },
    },
    "dpo-iter": {
        "xu": {
            "beta": _XU_DPO,
            "optim.learning_rate": _XU_DPO,
            "sampling.temperature": "Xu et al. App. A.2 (their PPO's sampling temperature 1.0)",
            "sampling.top_k": "Xu et al. App. A.2 (their PPO's top-k 200)",
            "pairing": "Xu et al. section 6 (DPO-Iter pairs the best and the worst sample)",
        },
        "xu-code": {
            "beta": _XU_DPO,
            "optim.learning_rate": _XU_DPO,
            "sampling.temperature": "Xu et al. App. A.2 (their PPO's sampling temperature 1.0)",
            "sampling.top_k": "Xu et al. App. A.2 (their PPO's top-k 200)",
            "sampling.num_samples": "Xu et al. section 6 (5 samples per prompt)",
            "pairing": "Xu et al. section 6 (DPO-Iter pairs the best and the worst sample)",
            "data.source": "Xu et al. section 6 (code; MBPP train as the prompt set is ours)",
            "data.options.split": "ours: the train split, so the test split stays for evaluation",
            "data.max_length": "ours: room for a problem and a program",
            "reward.kind": "Xu et al. section 6 (reward from executing the unit tests)",
            "reward.code_pass_reward": "Xu et al. section 6 (10 for a passing program)",
            "pass_threshold": "Xu et al. section 6 (a prompt without a passing sample is paired with its solution)",
        },
        "tiny": {"*": _SMOKE},
    },
    "eval": {
        "code-pass-at-k": {
            "sampling.temperature": "Chen et al. 2021 (temperature 0.8 for pass@k with large k)",
            "sampling.top_p": "Chen et al. 2021 (top-p 0.95)",
            "*": "ours: the code tasks, pass@1 and pass@10 from 20 samples, 512 new tokens",
        },
        "ivison": {
            "tasks": "Ivison et al. 2024 section 2.2 / App. D (the 11 benchmarks in 6 categories)",
            "sampling.temperature": "Ivison et al. 2024 App. D (greedy decoding except the pass@10 code tasks)",
            "sampling.max_new_tokens": "ours: a cap on answer length; each task's own maximum applies below it",
            "*": "ours: where the suite's results go",
        },
        "tiny": {"*": _SMOKE},
    },
}

NOTES: dict[str, dict[str, str]] = {"ppo": ppo_presets.NOTES}


def load_presets(command: str) -> tuple[type, dict[str, dict[str, Any]]]:
    module_name, cls_name = COMMANDS[command]
    module = importlib.import_module(module_name)
    return getattr(module, cls_name), module.PRESETS


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys (lists and other values are leaves)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + str(key)] = value
    return out


def preset_rows(command: str, preset: str) -> list[tuple[str, Any, Any]]:
    """(field, resolved value, default) for every field the preset sets or changes, in field order."""
    cls, presets = load_presets(command)
    default = flatten(to_dict(build_config(cls)))
    resolved = flatten(to_dict(build_config(cls, presets=presets, preset=preset)))
    named = set(flatten(presets[preset]))
    keys = [k for k in resolved if k in named or resolved[k] != default.get(k)]
    return [(k, resolved[k], default.get(k)) for k in keys]


def source_of(command: str, preset: str, key: str) -> str | None:
    sources = SOURCES.get(command, {}).get(preset, {})
    return sources.get(key, sources.get("*"))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def render() -> str:
    lines = [
        "# Presets and their sources",
        "",
        "Generated by `python -m prefalign.trainers.presets_doc` from the presets in the code; a test fails when",
        "this page is out of date. For each preset: every setting it sets or changes (resolved, as",
        "`prefalign <command> --preset NAME --print-config` prints them), the default, and the source: the",
        'paper with its section or table, or *ours* with the reason. Xu et al. (2024) is "Is DPO Superior to',
        'PPO for LLM Alignment?"; Ivison et al. (2024) is "Unpacking DPO and PPO".',
        "",
    ]
    for command in COMMANDS:
        _, presets = load_presets(command)
        lines += [f"## `prefalign {command}`", ""]
        for preset in presets:
            lines += [f"### `--preset {preset}`", ""]
            note = NOTES.get(command, {}).get(preset)
            if note:
                lines += [note, ""]
            lines += ["| setting | value | default | source |", "|---|---|---|---|"]
            for key, value, default in preset_rows(command, preset):
                source = source_of(command, preset, key) or "MISSING"
                cells = [f"`{key}`", f"`{_fmt(value)}`", f"`{_fmt(default)}`", source.replace("|", "\\|")]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prefalign.trainers.presets_doc", description=__doc__)
    parser.add_argument("--out", default="docs/presets.md", help="the page to write (or check)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page differs from the code")
    args = parser.parse_args(argv)
    text = render()
    path = Path(args.out)
    if args.check:
        current = path.read_text() if path.exists() else ""
        if current != text:
            print(f"{path} is out of date: run python -m prefalign.trainers.presets_doc", file=sys.stderr)
            return 1
        return 0
    write_text_atomic(path, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
