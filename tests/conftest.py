"""Shared test set-up: quiet libraries, few threads, tiny models."""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

try:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
except ImportError:  # pragma: no cover
    pass


@pytest.fixture
def tiny():
    """(model, tokenizer): a tiny random Llama with the byte-level ChatML tokenizer."""
    from prefalign.models.tiny import tiny_model_and_tokenizer

    return tiny_model_and_tokenizer(seed=0)


@pytest.fixture
def one_thread():
    """One torch thread for the test (a tiny model runs fastest so; two threads wait on each other on a busy machine).

    Modules take it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
