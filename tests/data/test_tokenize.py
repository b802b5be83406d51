import pytest
import torch

from prefalign.data.collate import collate_encoded, collate_pairs, collate_prompts, pad_sequences
from prefalign.data.schema import Message, user_prompt
from prefalign.data.tokenize import TruncatedAway, encode_example, encode_pair, encode_prompt, join_truncated


def test_response_ends_with_eos_and_mask_covers_it(tiny):
    _, tok = tiny
    enc = encode_example(tok, user_prompt("hi"), "hello", max_length=200)
    assert enc.input_ids[-1] == tok.eos_token_id
    assert sum(enc.response_mask) == len("hello") + 1
    assert enc.input_ids[: enc.prompt_length] == encode_prompt(tok, user_prompt("hi"))
    assert tok.decode(enc.input_ids[: enc.prompt_length]).endswith("<|im_start|>assistant\n")
    assert not enc.truncated


def test_truncation_policy():
    prompt, response = list(range(10)), [100, 101, 102, 103, 999]
    enc = join_truncated(prompt, response, max_length=8, max_prompt_length=4)
    assert enc.input_ids == [6, 7, 8, 9, 100, 101, 102, 103]  # prompt keeps its end, response loses its end (EOS)
    assert enc.truncated and enc.prompt_length == 4
    with pytest.raises(TruncatedAway):
        join_truncated(prompt, [], max_length=8, max_prompt_length=4)
    with pytest.raises(ValueError, match="max_prompt_length"):
        join_truncated(prompt, response, max_length=8, max_prompt_length=8)


def test_empty_response_is_reported_not_scored(tiny):
    _, tok = tiny
    with pytest.raises(TruncatedAway, match="rejected"):
        encode_pair(tok, user_prompt("q"), "fine", "   ", max_length=64)


def test_pair_shares_prompt_and_collates_chosen_first(tiny):
    _, tok = tiny
    prompt = [Message("user", "a"), Message("assistant", "b"), Message("user", "c")]
    pair = encode_pair(tok, prompt, "long answer", "no", max_length=128)
    assert pair.chosen.input_ids[: pair.chosen.prompt_length] == pair.rejected.input_ids[: pair.rejected.prompt_length]
    batch = collate_pairs([pair], tok.pad_token_id)
    assert batch["input_ids"].shape == (2, len(pair.chosen.input_ids))
    assert batch["response_mask"][0].sum() == len("long answer") + 1
    assert batch["attention_mask"][1].sum() == len(pair.rejected.input_ids)


def test_padding_sides():
    assert pad_sequences([[1, 2], [3]], 0).tolist() == [[1, 2], [3, 0]]
    assert pad_sequences([[1, 2], [3]], 0, side="left").tolist() == [[1, 2], [0, 3]]
    prompts = collate_prompts([[1, 2, 3], [4]], pad_token_id=0)
    assert prompts["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError):
        pad_sequences([], 0)


def test_collate_encoded_masks(tiny):
    _, tok = tiny
    a = encode_example(tok, user_prompt("x"), "yy", 64)
    b = encode_example(tok, user_prompt("longer prompt"), "z", 64)
    batch = collate_encoded([a, b], tok.pad_token_id)
    assert torch.equal(batch["attention_mask"].sum(1), torch.tensor([len(a.input_ids), len(b.input_ids)]))
    assert torch.all(batch["response_mask"] <= batch["attention_mask"])
