"""Tiny models built from a config, with random weights: the fast path for tests and smoke runs.

``build_byte_tokenizer`` makes a byte-level tokenizer (256 byte tokens, no merges, so any text
encodes) with a ChatML chat template, an EOS distinct from the pad token, through the ordinary
``PreTrainedTokenizerFast`` path. ``build_tiny_llama`` makes a Llama causal LM of a few thousand to
a few million parameters for that vocabulary.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|im_start|>", "<|im_end|>"]


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer without merges: one token per UTF-8 byte, plus ChatML specials."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def build_tiny_llama(
    vocab_size: int,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    pad_token_id: int = 0,
    eos_token_id: int | None = None,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised Llama causal LM, deterministic for a given seed."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        attention_dropout=0.0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = pad_token_id
    model.generation_config.eos_token_id = eos_token_id
    return model


def tiny_model_and_tokenizer(seed: int = 0, **kwargs) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """The byte tokenizer and a tiny Llama sized for it."""
    tok = build_byte_tokenizer()
    model = build_tiny_llama(
        len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, seed=seed, **kwargs
    )
    return model, tok
