"""Scoring a rollout: value alignment, micro-batching, reward placement, score shaping."""

from __future__ import annotations

import pytest
import torch

from prefalign.algorithms.kl import kl_penalized_rewards
from prefalign.algorithms.normalize import RunningMeanStd
from prefalign.data.schema import Prompt, user_prompt
from prefalign.models.heads import sequence_scores, token_values
from prefalign.models.load import ModelConfig, load_reward_model, load_value_model
from prefalign.models.logprobs import token_logprobs
from prefalign.models.tiny import tiny_model_and_tokenizer
from prefalign.rewards.learned import LearnedReward
from prefalign.rewards.registry import CharacterFraction, task_reward
from prefalign.rollout.experience import (
    RolloutScorer,
    aligned_values,
    apply_truncated_reward,
    normalize_and_clip,
    rollout_logprobs,
    rollout_values,
)
from prefalign.rollout.generate import build_rollout


@pytest.fixture(scope="module")
def tok():
    return tiny_model_and_tokenizer()[1]


def mixed_rollout(tok):
    """Rows of different prompt and response lengths; rows 0 and 2 end with EOS, 1 and 3 are truncated."""
    eos = tok.eos_token_id
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14], [15]]
    responses = [[70, 71, eos], [72, 73, 74, 75, 76], [eos], [77, 78]]
    return build_rollout(prompts, responses, [True, False, True, False], [0, 1, 2, 3], tok)


def test_aligned_values_are_the_head_one_position_earlier():
    critic = load_value_model(ModelConfig("tiny-random"))
    ids = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]])
    mask = (torch.arange(6) < torch.tensor([[4], [6]])).long()
    shifted = aligned_values(critic, ids, mask)
    per_position = token_values(critic, ids, mask)
    assert torch.all(shifted[:, 0] == 0)
    torch.testing.assert_close(shifted[:, 1:], per_position[:, :-1], atol=1e-6, rtol=0)


def test_micro_batching_does_not_change_logprobs_or_values(tok):
    policy, _ = tiny_model_and_tokenizer(seed=1)
    critic = load_value_model(ModelConfig("tiny-random"), seed=2)
    ro = mixed_rollout(tok)
    full = token_logprobs(policy, ro.sequences, ro.attention_mask, ro.response_mask, temperature=0.7)
    for size in (1, 3, 4):
        torch.testing.assert_close(rollout_logprobs(policy, ro, size, 0.7), full, atol=1e-5, rtol=0)
    values_one = rollout_values(critic, ro, 1)
    torch.testing.assert_close(rollout_values(critic, ro, 4), values_one, atol=1e-5, rtol=0)
    assert torch.all(values_one[ro.response_mask == 0] == 0)


def test_reward_model_score_is_read_at_the_last_real_token_whatever_the_padding(tok):
    rm = load_reward_model(ModelConfig("tiny-random"), seed=3)
    learned = LearnedReward(rm, tok, micro_batch_size=3)
    ro = mixed_rollout(tok)
    right = learned.score_tokens(ro.sequences, ro.attention_mask)
    # each row alone, unpadded: the score at its own last token (the EOS, or the last generated token)
    alone = torch.stack(
        [
            sequence_scores(
                rm,
                ro.sequences[i : i + 1, : int(ro.attention_mask[i].sum())],
                ro.attention_mask[i : i + 1, : int(ro.attention_mask[i].sum())],
            )[0]
            for i in range(len(ro))
        ]
    )
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=0)
    # the same rows left-padded
    lengths = ro.attention_mask.sum(dim=1)
    width = ro.sequences.shape[1]
    left = torch.full_like(ro.sequences, tok.pad_token_id)
    left_mask = torch.zeros_like(ro.attention_mask)
    for i, n in enumerate(lengths.tolist()):
        left[i, width - n :] = ro.sequences[i, :n]
        left_mask[i, width - n :] = 1
    torch.testing.assert_close(learned.score_tokens(left, left_mask), alone, atol=1e-5, rtol=0)
    # ... and the score lands on the last response token of every row, EOS or not
    zeros = torch.zeros(ro.sequences.shape)
    token_rewards, _ = kl_penalized_rewards(right, zeros, zeros, ro.response_mask, 0.1)
    last = ro.prompt_lengths + ro.response_lengths - 1
    for i in range(len(ro)):
        expected = torch.zeros(width)
        expected[last[i]] = right[i]
        torch.testing.assert_close(token_rewards[i], expected)


def test_scorer_token_path_equals_text_path_for_responses_that_ended(tok):
    rm = load_reward_model(ModelConfig("tiny-random"), seed=4)
    learned = LearnedReward(rm, tok, micro_batch_size=2)
    prompts = [Prompt(user_prompt(t)) for t in ("hello", "tell me more please", "x")]
    prompt_ids = [learned.encode(p, "")[:-1] for p in prompts]  # chat-rendered prompt (drop the EOS of "")
    eos = tok.eos_token_id
    responses = [list(tok("abc")["input_ids"]) + [eos], list(tok("de f")["input_ids"]) + [eos], [eos]]
    ro = build_rollout(prompt_ids, responses, [True, True, True], [0, 1, 2], tok)
    by_tokens = RolloutScorer([(1.0, learned, True)])(ro, prompts)
    by_text = RolloutScorer([(1.0, learned, False)])(ro, prompts)
    torch.testing.assert_close(by_tokens, by_text, atol=1e-5, rtol=0)
    both = RolloutScorer([(2.0, learned, True), (0.5, CharacterFraction("abc"), False)])(ro, prompts)
    torch.testing.assert_close(both, 2.0 * by_tokens + 0.5 * torch.tensor([1.0, 0.0, 0.0]), atol=1e-5, rtol=0)


def test_eos_trick_normalisation_and_clipping():
    raw = torch.tensor([1.0, 50.0, -3.0, 2.0])
    ended = torch.tensor([True, True, False, False])
    tricked = apply_truncated_reward(raw, ended, -10.0)
    assert tricked.tolist() == [1.0, 50.0, -10.0, -10.0]
    assert torch.equal(apply_truncated_reward(raw, ended, None), raw)
    assert normalize_and_clip(tricked, None, 20.0).tolist() == [1.0, 20.0, -10.0, -10.0]
    stats = RunningMeanStd(epsilon=0.0)
    stats.update(tricked)
    normalized = normalize_and_clip(tricked, stats, None)
    assert abs(float(normalized.mean())) < 1e-5 and abs(float(normalized.std(unbiased=False)) - 1) < 1e-4


def test_task_reward_registry():
    prompts = [Prompt(user_prompt("p"))] * 3
    assert task_reward("char_fraction:ab")(prompts, ["abab", "axyz", ""]).tolist() == [1.0, 0.25, 0.0]
    assert task_reward("length_target:4")(prompts, ["abcd", "ab", "abcdefgh"]).tolist() == [0.0, -0.5, -1.0]
    with pytest.raises(ValueError, match="unknown task reward"):
        task_reward("no_such_reward")
    with pytest.raises(ValueError):
        task_reward("length_target:many")


def test_evaluation_task_as_reward_and_prompt_source():
    """``eval:gsm8k`` scores with the GSM8K task's own checker; ``task:gsm8k:train`` gives its prompts."""
    from prefalign.trainers.ppo.config import PromptDataConfig
    from prefalign.trainers.ppo.setup import load_prompt_sets

    train, val = load_prompt_sets(PromptDataConfig(source="task:gsm8k:train", num_prompts=6, validation_prompts=2))
    assert len(train) == 4 and len(val) == 2
    reward = task_reward("eval:gsm8k")
    reference = train[0].metadata["reference"]
    scores = reward(train[:1] * 2, [f"The answer is {reference}.", "I do not know."])
    assert scores.tolist() == [1.0, 0.0]


def test_learned_reward_text_encoding_batched_and_cached_equals_one_by_one(tok):
    from prefalign.data.tokenize import encode_prompt, encode_response

    rm = load_reward_model(ModelConfig("tiny-random"), seed=5)
    learned = LearnedReward(rm, tok, micro_batch_size=2, max_length=14)
    prompts = [Prompt(user_prompt(t)) for t in ("hello", "a much longer request, please", "hello", "x")]
    responses = ["abc", "de f g h", "", "a very long answer that gets cut"]
    rows = learned.encode_many(prompts, responses)
    for p, r, row in zip(prompts, responses, rows):
        full = encode_prompt(tok, p.messages) + encode_response(tok, r)
        assert row == full[-14:]  # the same ids, cut from the start to max_length
        assert row == learned.encode(p, r)
    assert len(learned._prompt_cache) == 3  # "hello" rendered once
    assert any(len(encode_prompt(tok, p.messages) + encode_response(tok, r)) > 14 for p, r in zip(prompts, responses))
    with pytest.raises(ValueError, match="4 prompts but 3 responses"):
        learned.encode_many(prompts, responses[:3])
