"""The embedded SmolLM2-135M-Instruct: loads from the PyPI package, chats, and takes a training step."""

import pytest
import torch

from prefalign.data.collate import collate_encoded, collate_prompts
from prefalign.data.schema import user_prompt
from prefalign.data.tokenize import encode_example, encode_prompt
from prefalign.models.load import SMOLLM2, ModelConfig, load_causal_lm, load_tokenizer
from prefalign.models.logprobs import token_logprobs

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def smollm2():
    cfg = ModelConfig(name_or_path=SMOLLM2)
    return load_causal_lm(cfg), load_tokenizer(cfg)


def test_smollm2_loads_as_plain_fp32_llama(smollm2):
    model, tok = smollm2
    assert model.config.model_type == "llama" and model.dtype == torch.float32
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert getattr(model, "hf_quantizer", None) is None
    assert tok.eos_token == "<|im_end|>" and tok.chat_template


def test_smollm2_answers_and_stops_at_eos(smollm2):
    model, tok = smollm2
    prompts = [
        encode_prompt(tok, user_prompt("What is the capital of France?")),
        encode_prompt(tok, user_prompt("Say hi.")),
    ]
    batch = collate_prompts(prompts, tok.pad_token_id)
    out = model.generate(
        **batch, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
    )
    first = tok.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in first
    assert tok.eos_token_id in out[0, batch["input_ids"].shape[1] :].tolist()


def test_smollm2_training_step_lowers_the_loss(smollm2):
    model, tok = smollm2
    enc = encode_example(tok, user_prompt("Name a colour."), "Blue is a colour.", max_length=64)
    batch = collate_encoded([enc], tok.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(2):
        logps = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
        loss = -(logps.sum() / batch["response_mask"].sum())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[1] < losses[0]
