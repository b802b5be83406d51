"""The tiny world's tokenizer and model: a word-level tokenizer and a small Llama built from a config.

The tokenizer is an ordinary Hugging Face fast tokenizer (``tokenizers`` WordLevel model, a
whitespace pre-tokenizer, wrapped in :class:`~transformers.PreTrainedTokenizerFast`) with one token
per word of the tiny world, the ChatML chat template of :mod:`prefalign.models.tiny`, ``<|im_end|>``
as EOS and a distinct ``<|pad|>``. Decoding joins words with single spaces, so a decoded response
reads back as the same words. Saved with the model, the folder loads through the usual
``load_causal_lm`` / ``load_tokenizer`` path like any other checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from prefalign.models.tiny import CHATML_TEMPLATE
from prefalign.studies.comparison.tiny_world.task import DIGITS, FORBIDDEN, LETTERS, NUMBERS, OPERATIONS, STYLE_WORDS

SPECIAL_TOKENS = ["<|pad|>", "<|im_start|>", "<|im_end|>", "<unk>"]
ROLE_WORDS = ["system", "user", "assistant"]


def vocabulary() -> list[str]:
    """Every word of the tiny world, specials first, without repeats, in a fixed order."""
    words: list[str] = []
    for word in [*SPECIAL_TOKENS, *ROLE_WORDS, *OPERATIONS, *DIGITS, *NUMBERS, *LETTERS, *FORBIDDEN, *STYLE_WORDS]:
        if word not in words:
            words.append(word)
    return words


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The word-level ChatML tokenizer (module docstring)."""
    vocab = {word: i for i, word in enumerate(vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with one space
    backend.add_special_tokens(SPECIAL_TOKENS[:3])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


@dataclass
class TinyModelConfig:
    hidden_size: int = 128
    """Width of the residual stream."""
    num_layers: int = 2
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads per block."""
    intermediate_size: int = 384
    """Width of the MLP of each block."""
    max_positions: int = 64
    """Longest sequence (prompt + response) the model takes."""


def build_model(config: TinyModelConfig, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A randomly initialised Llama for the tiny world's vocabulary, deterministic in ``seed``."""
    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        attention_dropout=0.0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(llama)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
