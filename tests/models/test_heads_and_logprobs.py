import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from prefalign.models.heads import last_real_index, sequence_scores, token_values
from prefalign.models.load import (
    ModelConfig,
    disable_dropout,
    load_reward_model,
    load_value_model,
    save_model,
    scalar_head,
)
from prefalign.models.logprobs import gather_logprobs, token_logprobs
from prefalign.models.reference import ReferenceModel

TINY = ModelConfig(name_or_path="tiny-random")


def _right_and_left(seqs, pad):
    length = max(len(s) for s in seqs)
    right = torch.tensor([s + [pad] * (length - len(s)) for s in seqs])
    left = torch.tensor([[pad] * (length - len(s)) + s for s in seqs])
    rmask = torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in seqs])
    return right, rmask, left, rmask.flip(1)


def test_last_real_index_both_sides():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_real_index(mask).tolist() == [2, 4, 4]
    with pytest.raises(ValueError, match="all zeros"):
        last_real_index(torch.tensor([[0, 0]]))


def test_reward_read_at_last_real_token_whatever_padding(tiny):
    _, tok = tiny
    model = load_reward_model(TINY).eval()
    eos = tok.eos_token_id
    # second sequence ends with EOS, which here is NOT the pad id; a pad==eos tokenizer is covered below
    seqs = [[5, 6, 7], [5, 6, 7, 8, eos], [9]]
    right, rmask, left, lmask = _right_and_left(seqs, tok.pad_token_id)
    with torch.no_grad():
        s_right = sequence_scores(model, right, rmask)
        s_left = sequence_scores(model, left, lmask)
        singles = torch.stack(
            [sequence_scores(model, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in seqs]
        )
    torch.testing.assert_close(s_right, singles, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s_left, singles, atol=1e-5, rtol=1e-5)


def test_reward_read_at_real_eos_when_pad_equals_eos(tiny):
    model = load_reward_model(TINY).eval()
    eos = 2
    seqs = [[5, 6, eos], [5, 6, 7, 8, eos]]
    right, rmask, _, _ = _right_and_left(seqs, eos)  # pad id == eos id
    with torch.no_grad():
        batched = sequence_scores(model, right, rmask)
        alone = sequence_scores(model, torch.tensor([seqs[0]]), torch.ones(1, 3, dtype=torch.long))
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)


def test_token_logprobs_match_manual_and_mask(tiny):
    model, _ = tiny
    ids = torch.randint(3, 200, (2, 9))
    mask = torch.ones_like(ids)
    resp = torch.zeros_like(ids)
    resp[:, 5:] = 1
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        manual = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        full = token_logprobs(model, ids, mask)
        part = token_logprobs(model, ids, mask, resp)
    torch.testing.assert_close(full[:, 1:], manual, atol=1e-5, rtol=1e-5)
    assert torch.all(full[:, 0] == 0)
    torch.testing.assert_close(part, full * resp, atol=1e-5, rtol=1e-5)


def test_gather_logprobs_chunked_equals_direct():
    logits = torch.randn(3, 7, 11)
    targets = torch.randint(0, 11, (3, 7))
    direct = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(gather_logprobs(logits, targets, chunk_size=4), direct)


def test_reward_model_saves_as_ordinary_hf_folder(tmp_path, tiny):
    _, tok = tiny
    model = load_reward_model(TINY).eval()
    path = save_model(model, tok, tmp_path / "rm")
    assert json.loads((path / "config.json").read_text())["architectures"] == ["LlamaForSequenceClassification"]
    reopened = AutoModelForSequenceClassification.from_pretrained(path).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(sequence_scores(reopened, ids, mask), sequence_scores(model, ids, mask))


def test_value_model_initialised_from_reward_model(tmp_path, tiny):
    _, tok = tiny
    rm = load_reward_model(TINY)
    with torch.no_grad():
        scalar_head(rm).weight.normal_()
    path = save_model(rm, tok, tmp_path / "rm")
    critic = load_value_model(ModelConfig(name_or_path=str(path)))
    torch.testing.assert_close(scalar_head(critic).weight, scalar_head(rm).weight)
    assert torch.all(scalar_head(critic).bias == 0)
    ids = torch.tensor([[5, 6, 7, 8]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        values = token_values(critic, ids, mask)
        score = sequence_scores(rm, ids, mask)
    assert values.shape == (1, 4)
    torch.testing.assert_close(values[0, -1], score[0], atol=1e-5, rtol=1e-5)


def test_reference_model_is_frozen_and_ema_moves_it(tiny):
    model, _ = tiny
    ref = ReferenceModel.copy_of(model)
    assert not any(p.requires_grad for p in ref.model.parameters())
    before = {n: p.clone() for n, p in ref.model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ref.ema_update_(model, 0.25)
    for name, p in ref.model.named_parameters():
        expected = 0.75 * before[name] + 0.25 * dict(model.named_parameters())[name]
        torch.testing.assert_close(p, expected)
    with pytest.raises(ValueError, match="rate"):
        ref.ema_update_(model, 1.5)


def test_disable_dropout():
    layer = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5))
    disable_dropout(layer)
    assert layer[1].p == 0.0
