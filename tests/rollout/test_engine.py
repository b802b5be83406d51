"""The built-in generation engine against Hugging Face ``generate`` and a full forward pass."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import TopPLogitsWarper

from prefalign.models.logprobs import token_logprobs
from prefalign.models.tiny import build_byte_tokenizer, tiny_model_and_tokenizer
from prefalign.rollout import engine, prefill
from prefalign.rollout.generate import SamplingConfig, generate
from prefalign.rollout.sampling import _top_p_keep, next_tokens

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 40, 41, 42], [14], [15, 16, 17, 18], [60, 61]]


def gqa_model(seed: int = 0, eos_bias: float = 0.0):
    """A tiny Llama with grouped-query attention (4 query heads on 2 KV heads), optionally EOS-biased."""
    tok = build_byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    if eos_bias:
        with torch.no_grad():
            model.lm_head.weight[tok.eos_token_id] += eos_bias * model.model.embed_tokens.weight.mean(0)
    return model, tok


@pytest.mark.parametrize("make", [lambda: tiny_model_and_tokenizer(seed=3), lambda: gqa_model(seed=1)])
@pytest.mark.parametrize(("num_samples", "micro"), [(1, 5), (3, 4), (2, 16)])
def test_greedy_tokens_equal_hugging_face_generate(make, num_samples, micro):
    model, tok = make()
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=24, num_samples=num_samples)
    ours = generate(model, tok, PROMPTS, sampling, micro, engine="builtin")
    theirs = generate(model, tok, PROMPTS, sampling, micro, engine="hf")
    assert torch.equal(ours.sequences, theirs.sequences)
    assert torch.equal(ours.response_mask, theirs.response_mask)
    assert ours.response_texts == theirs.response_texts
    assert ours.logprobs is not None and theirs.logprobs is None


def test_greedy_equal_with_eos_stops_and_without_stopping():
    model, tok = gqa_model(seed=2, eos_bias=10.0)
    stop = SamplingConfig(temperature=0.0, max_new_tokens=30, num_samples=2)
    ours = generate(model, tok, PROMPTS, stop, 4, engine="builtin")
    theirs = generate(model, tok, PROMPTS, stop, 4, engine="hf")
    assert ours.ended_with_eos.any() and (~ours.ended_with_eos).any(), "the EOS bias should give both kinds of rows"
    assert torch.equal(ours.sequences, theirs.sequences)
    assert torch.equal(ours.ended_with_eos, theirs.ended_with_eos)
    fixed = SamplingConfig(temperature=0.0, max_new_tokens=30, stop_at_eos=False)
    ours = generate(model, tok, PROMPTS, fixed, 8, engine="builtin")
    theirs = generate(model, tok, PROMPTS, fixed, 8, engine="hf")
    assert (ours.response_lengths == 30).all() and not ours.ended_with_eos.any()
    assert torch.equal(ours.sequences, theirs.sequences)


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.7, 0, 1.0), (1.0, 20, 0.9), (1.3, 0, 0.8)])
def test_sampled_logprobs_match_a_full_forward(temperature, top_k, top_p):
    model, tok = gqa_model(seed=4, eos_bias=8.0)
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=20, num_samples=3)
    ro = generate(model, tok, PROMPTS, sampling, 6, generator_seed=5, engine="builtin")
    full = token_logprobs(model, ro.sequences, ro.attention_mask, ro.response_mask, temperature=temperature)
    assert ro.logprobs.shape == ro.sequences.shape
    assert ((ro.logprobs != 0) <= ro.response_mask.bool()).all()
    torch.testing.assert_close(ro.logprobs, full, atol=1e-5, rtol=0)
    selected = ro.select([4, 1])
    torch.testing.assert_close(selected.logprobs, full[[4, 1], : selected.sequences.shape[1]], atol=1e-5, rtol=0)


def test_top_k_and_top_p_keep_hugging_faces_sets():
    torch.manual_seed(0)
    logits = torch.randn(6, 50) * 3
    for p in (0.3, 0.8, 0.95):
        values, ids = logits.sort(dim=-1, descending=True)
        ours = torch.full_like(logits, float("-inf")).scatter(1, ids, _top_p_keep(values, p))
        theirs = TopPLogitsWarper(p)(None, logits.clone())
        assert torch.equal(torch.isfinite(ours), torch.isfinite(theirs))
    top = logits.topk(4, dim=-1).indices
    for _ in range(20):
        chosen, logprob = next_tokens(logits.clone(), 0.9, 4, 1.0)
        assert (top == chosen[:, None]).any(dim=1).all()
        torch.testing.assert_close(logprob, torch.log_softmax(logits / 0.9, -1).gather(1, chosen[:, None])[:, 0])
    greedy, _ = next_tokens(logits.clone(), 0.0, 0, 1.0)
    assert torch.equal(greedy, logits.argmax(-1))


def test_samples_of_a_prompt_share_one_prefill_and_seed_reproduces():
    model, tok = gqa_model(seed=0)
    rows = []  # the full-model forward runs only for the prefill: the rows it was given
    model.model.register_forward_hook(
        lambda m, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=6, num_samples=4)
    a = generate(model, tok, PROMPTS[:3], sampling, 12, generator_seed=9, engine="builtin")
    assert sum(rows) == 3  # each distinct prompt once, not once per sample
    b = generate(model, tok, PROMPTS[:3], sampling, 12, generator_seed=9, engine="builtin")
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.logprobs, b.logprobs)
    assert len({tuple(r) for r in a.sequences.tolist()}) > 3  # the samples of a prompt differ


@pytest.mark.parametrize("call_slots", [0, 10**6])
def test_attention_over_each_runs_own_slots_changes_nothing(monkeypatch, call_slots):
    """Rows of short prompts attending from their run's first slot: the greedy tokens of Hugging Face ``generate``
    and sampled log-probs equal to a full forward, in the caller's row order (one run per prompt length at no
    per-call cost, a single run at a prohibitive one)."""
    monkeypatch.setattr(engine, "ATTENTION_CALL_SLOTS", call_slots)
    runs = []
    original = engine.attention_buckets

    def recorded(lengths, start):
        runs.append(original(lengths, start))
        return runs[-1]

    monkeypatch.setattr(engine, "attention_buckets", recorded)
    model, tok = gqa_model(seed=4, eos_bias=8.0)
    prompts = [[5, 6], list(range(20, 60)), [7, 8, 9], list(range(60, 75)), [11]]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=16, stop_at_eos=False)
    ours = generate(model, tok, prompts, greedy, 8, engine="builtin")
    theirs = generate(model, tok, prompts, greedy, 8, engine="hf")
    assert torch.equal(ours.sequences, theirs.sequences)
    assert [len(r) for r in runs] == [len(prompts) if call_slots == 0 else 1]
    if call_slots == 0:  # longest prompt first; each run starts at its own prompt's first slot
        start = max(map(len, prompts))
        assert runs[0] == [(j, j + 1, start - n) for j, n in enumerate(sorted(map(len, prompts), reverse=True))]
    sampled = SamplingConfig(temperature=0.9, max_new_tokens=16, num_samples=2)
    ro = generate(model, tok, prompts, sampled, 10, generator_seed=3, engine="builtin")
    full = token_logprobs(model, ro.sequences, ro.attention_mask, ro.response_mask, temperature=0.9)
    torch.testing.assert_close(ro.logprobs, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("overhead", [1, 10**6])
def test_grouped_prefill_equals_one_prompt_at_a_time(monkeypatch, overhead):
    """Right-padded prompts sharing a forward give each prompt the keys, values and logits it gets alone."""
    model, _ = gqa_model(seed=3)
    prompts = PROMPTS + [[70, 71, 72], [73, 74, 75, 76, 77, 78, 79, 80, 81]]
    owners = [[i] for i in range(len(prompts))]
    capacity = max(map(len, prompts)) + 4
    calls = []
    model.model.register_forward_hook(lambda *_: calls.append(1))
    monkeypatch.setattr(prefill, "prefill_overhead_tokens", lambda lm: overhead)
    with torch.no_grad():
        grouped = prefill.prefill(model, prompts, owners, len(prompts), capacity, "cpu")
        alone = [prefill.prefill(model, [p], [[0]], 1, capacity, "cpu") for p in prompts]
    assert (len(calls) - len(prompts) == 1) == (overhead > 1)  # a large per-call cost puts all in one forward
    start = grouped[2]
    for i, (p, (cache, logits, own_start)) in enumerate(zip(prompts, alone)):
        torch.testing.assert_close(grouped[1][i], logits[0], atol=1e-6, rtol=0)
        for layer in range(len(cache.keys)):
            for ours, theirs in ((grouped[0].keys, cache.keys), (grouped[0].values, cache.values)):
                torch.testing.assert_close(
                    ours[layer][i, :, start - len(p) : start],
                    theirs[layer][0, :, own_start - len(p) : own_start],
                    atol=1e-6,
                    rtol=0,
                )
                assert not ours[layer][i, :, : start - len(p)].any()  # slots before the prompt stay empty


@pytest.mark.parametrize("pack_tokens", [4096, 12])
def test_packed_prefill_equals_one_prompt_at_a_time(monkeypatch, pack_tokens):
    """Prompts packed into one sequence (or, with a small cap, several) get the keys, values and logits of a forward
    of each alone (Hugging Face's), also when several cache rows share a prompt."""
    model, _ = gqa_model(seed=3)
    prompts = PROMPTS + [[70, 71, 72], [73, 74, 75, 76, 77, 78, 79, 80, 81]]
    owners = [[2 * i, 2 * i + 1] if i % 3 == 0 else [2 * i] for i in range(len(prompts))]
    rows = max(r for o in owners for r in o) + 1
    capacity = max(map(len, prompts)) + 4
    forwards = []
    model.model.embed_tokens.register_forward_hook(lambda *_: forwards.append(1))
    monkeypatch.setattr(prefill, "PREFILL_PACK_TOKENS", pack_tokens)
    with torch.no_grad():
        monkeypatch.setattr(prefill, "PACKED_PREFILL_MIN_PARAMS", 0)
        cache, logits, start = prefill.prefill(model, prompts, owners, rows, capacity, "cpu")
        packed_forwards = len(forwards)
        monkeypatch.setattr(prefill, "PACKED_PREFILL_MIN_PARAMS", 10**12)
        alone = [prefill.prefill(model, [p], [[0]], 1, capacity, "cpu") for p in prompts]
    total = sum(map(len, prompts))
    assert packed_forwards == (1 if pack_tokens >= total else 4)  # a cap of 12 tokens: 9 | 9 | 4+3+3+2 | 1
    for i, (p, (own, own_logits, own_start)) in enumerate(zip(prompts, alone)):
        for row in owners[i]:
            torch.testing.assert_close(logits[row], own_logits[0], atol=1e-5, rtol=0)
            for layer in range(len(own.keys)):
                for ours, theirs in ((cache.keys, own.keys), (cache.values, own.values)):
                    torch.testing.assert_close(
                        ours[layer][row, :, start - len(p) : start],
                        theirs[layer][0, :, own_start - len(p) : own_start],
                        atol=1e-5,
                        rtol=0,
                    )
                    assert not ours[layer][row, :, : start - len(p)].any()
    assert not any(cache.keys[0][r].any() for r in range(rows) if not any(r in o for o in owners))


@pytest.mark.parametrize("make", [lambda: tiny_model_and_tokenizer(seed=3), lambda: gqa_model(seed=1)])
def test_packed_prefill_generation_equals_hugging_face(monkeypatch, make):
    monkeypatch.setattr(prefill, "PACKED_PREFILL_MIN_PARAMS", 0)
    model, tok = make()
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=24, num_samples=2)
    ours = generate(model, tok, PROMPTS, greedy, 4, engine="builtin")
    assert torch.equal(ours.sequences, generate(model, tok, PROMPTS, greedy, 4, engine="hf").sequences)
    sampled = generate(model, tok, PROMPTS, SamplingConfig(temperature=0.8, max_new_tokens=12), 5, generator_seed=1)
    full = token_logprobs(model, sampled.sequences, sampled.attention_mask, sampled.response_mask, temperature=0.8)
    torch.testing.assert_close(sampled.logprobs, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("packed", [False, True])
def test_lora_policy_greedy_equal(monkeypatch, packed):
    peft = pytest.importorskip("peft")
    monkeypatch.setattr(prefill, "PACKED_PREFILL_MIN_PARAMS", 0 if packed else 10**12)
    model, tok = gqa_model(seed=6)
    lora = peft.get_peft_model(
        model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    assert engine.supports(lora)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=16)
    ours = generate(lora, tok, PROMPTS, sampling, 8, engine="builtin")
    theirs = generate(lora, tok, PROMPTS, sampling, 8, engine="hf")
    assert torch.equal(ours.sequences, theirs.sequences)
    with lora.disable_adapter():
        base = generate(lora, tok, PROMPTS, sampling, 8, engine="builtin")
    assert not torch.equal(base.sequences, ours.sequences)  # the adapters took part


def test_other_architectures_fall_back_to_hugging_face():
    tok = build_byte_tokenizer()
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=128)
    model = GPT2LMHeadModel(config).eval()
    assert not engine.supports(model)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=4)
    ro = generate(model, tok, PROMPTS, sampling, 8)  # auto
    assert ro.logprobs is None and ro.response_lengths.max() <= 4
    with pytest.raises(ValueError, match="supports model types"):
        generate(model, tok, PROMPTS, sampling, 8, engine="builtin")
    with pytest.raises(ValueError, match="engine must be one of"):
        generate(model, tok, PROMPTS, sampling, 8, engine="vllm-typo")


@pytest.mark.real_model
def test_real_model_greedy_equal_and_logprobs():
    from prefalign.models.load import ModelConfig, load_causal_lm, load_tokenizer

    model, tok = load_causal_lm(ModelConfig()).eval(), load_tokenizer(ModelConfig())
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
        for q in (
            "What is the capital of France?",
            "Write a haiku about the sea.",
            "How do I boil an egg? Explain step by step, please.",
        )
    ]
    prompts = [p if isinstance(p, list) else p["input_ids"] for p in prompts]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=16)
    ours = generate(model, tok, prompts, greedy, 3, engine="builtin")
    theirs = generate(model, tok, prompts, greedy, 3, engine="hf")
    assert torch.equal(ours.sequences, theirs.sequences)
    sampled = generate(model, tok, prompts, SamplingConfig(temperature=0.7, max_new_tokens=16), 3, generator_seed=0)
    full = token_logprobs(model, sampled.sequences, sampled.attention_mask, sampled.response_mask, temperature=0.7)
    # 30 fp32 layers: the decode step (one token per row) and the full forward (all tokens at once) round
    # differently; measured up to 1.8e-5 here, about as far as two full forwards batched differently
    torch.testing.assert_close(sampled.logprobs, full, atol=5e-5, rtol=0)


def test_shared_prefix():
    system = list(range(100, 110))
    assert prefill.shared_prefix([system + [1, 2], system + [3], system + [1, 4]]) == 10
    assert prefill.shared_prefix([system + [1], system + [1]]) == 10  # each keeps its last token
    assert prefill.shared_prefix([system, system + [5]]) == 9
    assert prefill.shared_prefix([system + [1]]) == 0  # one prompt: nothing to share
    assert prefill.shared_prefix([system[:7] + [1], system[:7] + [2]]) == 0  # under SHARED_PREFIX_MIN_TOKENS
    assert prefill.shared_prefix([[9] + system, system]) == 0


@pytest.mark.parametrize("pack_tokens", [4096, 14])
def test_shared_prefix_runs_once_and_equals_each_prompt_alone(monkeypatch, pack_tokens):
    """Prompts that start alike (a chat template's system prompt) run that start once; every row still gets the
    keys, values and logits of a forward of its whole prompt alone, whatever the packs."""
    model, tok = gqa_model(seed=4)
    system = list(range(100, 111))
    prompts = [system + p for p in PROMPTS] + [system[:-1] + [3, 4]]  # the last one shares 10 of the 11
    owners = [[2 * i, 2 * i + 1] if i % 2 == 0 else [2 * i] for i in range(len(prompts))]
    rows = max(r for o in owners for r in o) + 1
    capacity = max(map(len, prompts)) + 4
    fed = []
    model.model.embed_tokens.register_forward_hook(lambda _m, args, _o: fed.append(args[0].shape[-1]))
    monkeypatch.setattr(prefill, "PREFILL_PACK_TOKENS", pack_tokens)
    monkeypatch.setattr(prefill, "PACKED_PREFILL_MIN_PARAMS", 0)
    with torch.no_grad():
        cache, logits, start = prefill.prefill(model, prompts, owners, rows, capacity, "cpu")
        tokens_fed = list(fed)
        monkeypatch.setattr(prefill, "PACKED_PREFILL_MIN_PARAMS", 10**12)
        alone = [prefill.prefill(model, [p], [[0]], 1, capacity, "cpu") for p in prompts]
    assert tokens_fed[0] == 10 and sum(tokens_fed) == 10 + sum(len(p) - 10 for p in prompts)
    assert (len(tokens_fed) > 2) == (pack_tokens < sum(tokens_fed))
    for i, (p, (own, own_logits, own_start)) in enumerate(zip(prompts, alone)):
        for row in owners[i]:
            torch.testing.assert_close(logits[row], own_logits[0], atol=1e-5, rtol=0)
            for layer in range(len(own.keys)):
                for ours, theirs in ((cache.keys, own.keys), (cache.values, own.values)):
                    torch.testing.assert_close(
                        ours[layer][row, :, start - len(p) : start],
                        theirs[layer][0, :, own_start - len(p) : own_start],
                        atol=1e-5,
                        rtol=0,
                    )
                    assert not ours[layer][row, :, : start - len(p)].any()
    # and the generations: greedy equal to Hugging Face's, sampled log-probs those of a full forward
    monkeypatch.setattr(prefill, "PACKED_PREFILL_MIN_PARAMS", 0)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=12, num_samples=2)
    ours = generate(model, tok, prompts, greedy, 6, engine="builtin")
    assert torch.equal(ours.sequences, generate(model, tok, prompts, greedy, 6, engine="hf").sequences)
    sampled = generate(model, tok, prompts, SamplingConfig(temperature=0.8, max_new_tokens=8), 6, generator_seed=2)
    full = token_logprobs(model, sampled.sequences, sampled.attention_mask, sampled.response_mask, temperature=0.8)
    torch.testing.assert_close(sampled.logprobs, full, atol=1e-5, rtol=0)
