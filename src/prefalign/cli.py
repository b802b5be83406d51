"""The ``prefalign`` command: one subcommand per job, each configured by a dataclass tree.

    prefalign <command> [--config FILE.yaml] [--preset NAME] [--field value ...] [--print-config]

Settings are taken, lowest first, from the dataclass defaults, the preset, the YAML file and the
flags. ``prefalign <command> --help`` lists every field with its documentation and current value
(after preset and YAML); ``--print-config`` prints the resolved settings as YAML (loadable with
``--config``) and exits without running. Each run writes its resolved settings to
``<output_dir>/config.yaml``. ``docs/presets.md`` gives the source of every preset setting.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from dataclasses import dataclass

#: command -> (module, config class, run function, presets mapping or None, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str | None, str]] = {
    "quickstart": (
        "prefalign.trainers.quickstart",
        "QuickstartConfig",
        "run_quickstart",
        None,
        "SFT then reward-model training on the embedded SmolLM2 and HH-RLHF harmless pairs; prints the figures",
    ),
    "sft": (
        "prefalign.trainers.sft",
        "SFTConfig",
        "run_sft",
        "PRESETS",
        "supervised fine-tuning on responses (loss on response tokens only)",
    ),
    "rm": (
        "prefalign.trainers.reward_model",
        "RewardModelConfig",
        "run_reward_model",
        "PRESETS",
        "train a Bradley-Terry reward model on preference pairs; reports held-out accuracy",
    ),
    "ppo": (
        "prefalign.trainers.ppo",
        "PPOConfig",
        "run_ppo",
        "PRESETS",
        "PPO from a reward model and/or a programmatic reward (presets: xu, ivison, table3-*, tiny)",
    ),
    "ppo-ablation": (
        "prefalign.trainers.ppo.ablation",
        "PPOAblationConfig",
        "run_ppo_ablation",
        "PRESETS",
        "Xu et al. Table 3: PPO baseline, + advantage normalisation, + large batch, + reference EMA",
    ),
    "dpo": (
        "prefalign.trainers.preference.dpo",
        "DPOConfig",
        "run_dpo",
        "PRESETS",
        "offline preference training: DPO, RRHF or PRO (--loss); reports held-out implicit-reward accuracy",
    ),
    "dpo-iter": (
        "prefalign.trainers.preference.iterative",
        "IterativeDPOConfig",
        "run_iterative_dpo",
        "PRESETS",
        "iterative DPO: each round samples k responses, labels them with a reward, pairs best vs worst, trains DPO",
    ),
    "synthetic": (
        "prefalign.studies.synthetic",
        "SyntheticConfig",
        "run_synthetic",
        None,
        "the synthetic study of Xu et al. section 4 (8x8 bandit, Table 1 counter-example, Theorem 4.1 check): table, "
        "PNG, JSON",
    ),
    "study": (
        "prefalign.studies.comparison",
        "StudyConfig",
        "run_study",
        "PRESETS",
        "the whole PPO-vs-DPO comparison on the embedded tiny world: report, tables, plots (presets: quick, full)",
    ),
    "eval": (
        "prefalign.evaluation.runner",
        "EvalConfig",
        "run_eval",
        "PRESETS",
        "evaluate a model (or a folder of generations) on tasks: per-task, per-category and overall scores; --compare",
    ),
    "eval-rm": (
        "prefalign.evaluation.reward_model_eval",
        "RewardModelEvalConfig",
        "run_reward_model_eval",
        None,
        "evaluate a reward model: accuracy on held-out pairs per subset (weighted) and best-of-N on tasks",
    ),
}


@dataclass
class _Command:
    name: str
    module: str
    config_cls: str
    run_fn: str
    presets: str | None
    help: str

    def load(self):
        module = importlib.import_module(self.module)
        presets = getattr(module, self.presets) if self.presets else None
        return getattr(module, self.config_cls), getattr(module, self.run_fn), presets


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # HF_HUB_OFFLINE is the user's: embedded names and local paths never touch the network anyway.
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def parse_config(name: str, argv: list[str]):
    """Build the config of command ``name`` from argv (without the command word)."""
    import tyro

    from prefalign.config import build_config

    entry = _Command(name, *COMMANDS[name])
    config_cls, run_fn, presets = entry.load()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--preset", default=None)
    known, rest = pre.parse_known_args(argv)
    base = build_config(config_cls, presets=presets, preset=known.preset, yaml_path=known.config)
    description = entry.help
    if presets:
        description += (
            f"\n\nPresets (--preset NAME; sources in docs/presets.md): {', '.join(sorted(presets))}. "
            "Also: --config FILE.yaml, --print-config (print the resolved settings as YAML and exit)."
        )
    else:
        description += "\n\nAlso: --config FILE.yaml, --print-config (print the resolved settings as YAML and exit)."
    # A YAML may give option maps list values (task_options ks: [1, 10]) that the flag form does not take;
    # tyro warns about such defaults and keeps them as they are, which is what is meant.
    warnings.filterwarnings("ignore", message=r"The field `\w+` is annotated with type", category=UserWarning)
    config = tyro.cli(
        config_cls,
        default=base,
        args=rest,
        prog=f"prefalign {name}",
        description=description,
        use_underscores=True,
        config=(tyro.conf.FlagConversionOff,),
    )
    return config, run_fn


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        width = max(len(n) for n in COMMANDS)
        print(
            "usage: prefalign <command> [--config FILE.yaml] [--preset NAME] [--field value ...] [--print-config]"
            "\n\ncommands:"
        )
        for name, entry in COMMANDS.items():
            print(f"  {name:<{width}}  {entry[4]}")
        print("\n`prefalign <command> --help` lists every setting of a command.")
        return 0
    name, rest = argv[0], argv[1:]
    print_config = "--print-config" in rest
    rest = [a for a in rest if a != "--print-config"]
    if name not in COMMANDS:
        print(f"prefalign: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    _quiet_libraries()
    from prefalign.config import ConfigError

    try:
        config, run_fn = parse_config(name, rest)
    except ConfigError as exc:
        print(f"prefalign {name}: {exc}", file=sys.stderr)
        return 2
    if print_config:
        import yaml

        from prefalign.config import to_dict

        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return 0
    from prefalign.trainers.model_card import set_command

    set_command(["prefalign", *argv])
    try:
        run_fn(config)
    except (ValueError, FileNotFoundError) as exc:  # bad input: config values, data rows, missing files
        if os.environ.get("PREFALIGN_DEBUG"):
            raise
        print(f"prefalign {name}: error: {exc}\n(set PREFALIGN_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
