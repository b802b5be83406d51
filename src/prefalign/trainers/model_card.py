"""The model card (``README.md``) written into every saved model folder of a training command.

It says what the folder holds and how it was made: the command line, the base model, the data
(source, split, held-out part, rows kept and dropped), the results of ``results.json`` and the
full settings, plus how to open the folder with plain ``transformers`` (and the LoRA adapter, when
there is one). :func:`prefalign.models.load.save_model` writes a short card of its own first, so a
folder saved outside a training session has one too.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from prefalign.atomic import write_text_atomic
from prefalign.config import to_dict

_COMMAND: list[str] = []


def set_command(argv: list[str]) -> None:
    """Record the command line (the ``prefalign`` CLI calls this with its own arguments)."""
    _COMMAND[:] = list(argv)


def command_line() -> str:
    """The command that started this run, as a user would type it."""
    argv = list(_COMMAND or sys.argv)
    if argv and Path(argv[0]).name in ("prefalign", "cli.py", "__main__.py"):
        argv[0] = "prefalign"
    return shlex.join(argv)


def _data_lines(data: dict[str, Any] | None, results: dict[str, Any]) -> list[str]:
    if not data:
        return ["- given as records in Python (no data config)"]
    lines = [f"- source: `{data.get('source')}`" + (f" (split `{data['split']}`)" if data.get("split") else "")]
    if data.get("eval_source") or data.get("eval_split"):
        lines.append(f"- held out: `{data.get('eval_source') or data.get('source')}` split `{data.get('eval_split')}`")
    else:
        lines.append(f"- held out: {data.get('eval_size')} of the source (seed {data.get('seed')})")
    if "kept_rows" in results:
        lines.append(f"- rows kept: {results['kept_rows']}, dropped as malformed: {results.get('dropped_rows', 0)}")
    return lines


def model_card(config: Any, results: dict[str, Any], command: str | None = None, adapter: bool = False) -> str:
    """The card's Markdown text for a run's config (a dataclass tree) and its results."""
    settings = to_dict(config)
    auto = "AutoModelForSequenceClassification" if "Reward" in type(config).__name__ else "AutoModelForCausalLM"
    lora = (
        ["", "The LoRA adapter is in `adapter/` (`peft.PeftModel.from_pretrained(base_model, 'FOLDER/adapter')`);"]
        + ["the weights here have it merged."]
        if adapter
        else []
    )
    base = (settings.get("model") or {}).get("name_or_path", "?")
    numbers = {k: v for k, v in results.items() if isinstance(v, (int, float, str, bool)) and k != "model_dir"}
    lines = [
        "---",
        "library_name: transformers",
        "tags: [prefalign]",
        "---",
        f"# {type(config).__name__.removesuffix('Config')} model trained with prefalign",
        "",
        f"- base model: `{base}`",
        f"- command: `{command or command_line()}`",
        "",
        "## Data",
        *_data_lines(settings.get("data"), results),
        "",
        "## Results",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in numbers.items()],
        "",
        "## Use",
        "",
        "```python",
        f"from transformers import {auto}, AutoTokenizer",
        f"model = {auto}.from_pretrained('FOLDER')",
        "tokenizer = AutoTokenizer.from_pretrained('FOLDER')",
        "```",
        *lora,
        "",
        "## Settings",
        "",
        "```yaml",
        yaml.safe_dump(settings, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_model_card(folder: Path, config: Any, results: dict[str, Any]) -> Path:
    """Write ``README.md`` into a saved model folder (atomically)."""
    folder = Path(folder)
    return write_text_atomic(folder / "README.md", model_card(config, results, adapter=(folder / "adapter").is_dir()))
