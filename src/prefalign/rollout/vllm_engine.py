"""An optional vLLM rollout engine inside the training process (``pip install prefalign[vllm]``).

Selected by ``rollout.engine: vllm`` (default ``builtin``, the Hugging Face sampler of
:mod:`prefalign.rollout.generate`, which needs no GPU). The engine

- is created once, from the policy's weights written to a temporary HF folder, on the process's own GPU,
  taking ``rollout.gpu_memory_utilization`` of it (the rest is the trainer's);
- receives the policy's weights after every update (:meth:`VLLMEngine.push_weights`, called with the full
  parameters, so under ZeRO-3 / FSDP inside :func:`prefalign.trainers.gather.parameters_for_generation`);
- samples with the run's temperature, top-k, top-p, max_new_tokens and number of samples, seeded per
  (seed, step, process), and returns the same :class:`~prefalign.rollout.generate.Rollout` as the built-in
  engine (EOS included in the response mask, right-padded) plus the engine's own log-probabilities of the
  sampled tokens, (N, T) aligned as the trainer's.

The old log-probs of PPO are always recomputed by the trainer (stage 2); the engine's are used only for the
mismatch metric and the optional truncated importance-sampling correction
(:mod:`prefalign.algorithms.rollout_correction`). vLLM is asked for the log-probs after temperature and
top-k/top-p processing (``logprobs_mode="processed_logprobs"``, vLLM >= 0.10.2), the distribution that sampled.

Departures and limits: LoRA policies are refused (vLLM would need the merged weights pushed every step);
one engine per training process (tensor parallelism 1), so the policy must fit on one GPU for sampling.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prefalign.rollout.generate import Rollout, SamplingConfig, build_rollout


@dataclass
class RolloutEngineConfig:
    engine: str = "builtin"
    """Who samples the rollouts: builtin (Hugging Face generate in the trainer, any device) or vllm (a vLLM engine
    in the training process, GPU only; pip install prefalign[vllm])."""
    gpu_memory_utilization: float = 0.3
    """vllm: share of the GPU's memory vLLM may take for weights and KV cache (the rest is the trainer's)."""
    importance_sampling_cap: float | None = None
    """vllm: truncated importance sampling: weight each token's policy-gradient term by min(pi_old/pi_rollout, cap)
    (Yao et al. 2025; e.g. 2.0). None: no correction (the mismatch is still logged)."""

    def __post_init__(self) -> None:
        if self.engine not in ("builtin", "vllm"):
            raise ValueError(f"rollout.engine must be builtin or vllm, got {self.engine!r}")
        if not 0.0 < self.gpu_memory_utilization < 1.0:
            raise ValueError(f"rollout.gpu_memory_utilization must be in (0, 1), got {self.gpu_memory_utilization}")
        if self.importance_sampling_cap is not None and self.importance_sampling_cap <= 0:
            raise ValueError(f"rollout.importance_sampling_cap must be positive, got {self.importance_sampling_cap}")
        if self.importance_sampling_cap is not None and self.engine != "vllm":
            raise ValueError(
                "rollout.importance_sampling_cap corrects a separate engine's samples: set rollout.engine vllm"
            )


def require_vllm() -> None:
    """A clear error when the vllm engine is selected but vLLM is not installed."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(
            "rollout.engine=vllm needs vLLM, which is not installed: pip install 'prefalign[vllm]' (a CUDA build; "
            "GPU only), or use rollout.engine=builtin"
        )


def sampling_params_kwargs(sampling: SamplingConfig, eos_id: int, seed: int) -> dict:
    """vLLM ``SamplingParams`` arguments equivalent to the built-in engine's settings (one log-prob per token: the
    sampled one's)."""
    return {
        "n": sampling.num_samples,
        "temperature": sampling.temperature,
        "top_k": sampling.top_k if sampling.top_k > 0 else -1,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
        "stop_token_ids": [eos_id],
        "logprobs": 0,
        "seed": seed,
        "detokenize": False,
    }


def rollout_from_samples(
    prompt_rows: Sequence[Sequence[int]],
    samples: Sequence[Sequence[tuple[list[int], list[float], bool]]],
    tokenizer,
) -> tuple[Rollout, torch.Tensor]:
    """Assemble the engine's samples into a :class:`Rollout` and the (N, T) engine log-probs.

    ``samples[p]`` holds, for prompt ``p``, one ``(response token ids, their log-probs, stopped at EOS)`` per
    sample. A response stopped at EOS ends with the EOS id (appended when the engine left it out; its
    log-prob is then unknown and set to NaN; the caller leaves NaN positions out of the mismatch and the
    importance weights). Rows are in the built-in engine's order: the samples of a prompt adjacent.
    """
    eos = tokenizer.eos_token_id
    prompts, responses, ended, index, logps = [], [], [], [], []
    for p, row in enumerate(samples):
        for tokens, token_logps, stopped in row:
            tokens, token_logps = list(tokens), list(token_logps)
            if stopped and (not tokens or tokens[-1] != eos):
                tokens, token_logps = [*tokens, eos], [*token_logps, float("nan")]
            if not tokens:  # an empty response that did not stop at EOS cannot happen with max_tokens >= 1
                raise ValueError(f"the engine returned an empty response for prompt {p}")
            prompts.append(list(prompt_rows[p]))
            responses.append(tokens)
            ended.append(bool(stopped))
            index.append(p)
            logps.append(token_logps)
    rollout = build_rollout(prompts, responses, ended, index, tokenizer)
    engine_logprobs = torch.zeros(rollout.sequences.shape, dtype=torch.float32)
    for i, (prompt, token_logps) in enumerate(zip(prompts, logps)):
        engine_logprobs[i, len(prompt) : len(prompt) + len(token_logps)] = torch.tensor(token_logps)
    return rollout, engine_logprobs


class VLLMEngine:
    """A vLLM ``LLM`` on this process's GPU, fed the policy's weights; see the module docstring."""

    def __init__(self, policy: torch.nn.Module, tokenizer, gpu_memory_utilization: float, seed: int):
        require_vllm()
        if hasattr(policy, "merge_and_unload"):
            raise ValueError(
                "rollout.engine=vllm does not support LoRA policies (policy.lora); use rollout.engine=builtin"
            )
        if not torch.cuda.is_available():
            raise ValueError("rollout.engine=vllm needs a GPU; use rollout.engine=builtin on a CPU")
        from vllm import LLM

        self.tokenizer = tokenizer
        with tempfile.TemporaryDirectory(prefix="prefalign-vllm-") as folder:
            policy.save_pretrained(folder, safe_serialization=True)
            tokenizer.save_pretrained(folder)
            self.llm = LLM(
                model=folder,
                dtype=str(next(policy.parameters()).dtype).removeprefix("torch."),
                gpu_memory_utilization=gpu_memory_utilization,
                seed=seed,
                enable_prefix_caching=True,
                logprobs_mode="processed_logprobs",
                distributed_executor_backend="external_launcher" if torch.distributed.is_initialized() else None,
            )

    def _model(self):
        engine = self.llm.llm_engine
        executor = engine.model_executor
        worker = executor.driver_worker
        worker = getattr(worker, "worker", worker)
        return worker.model_runner.model

    @torch.no_grad()
    def push_weights(self, policy: torch.nn.Module) -> None:
        """Load the policy's current (full) parameters into the engine and drop its prefix cache."""
        self._model().load_weights((name, p.detach()) for name, p in policy.state_dict().items())
        self.llm.reset_prefix_cache()

    def generate(
        self, prompt_ids: Sequence[Sequence[int]], sampling: SamplingConfig, seed: int
    ) -> tuple[Rollout, torch.Tensor]:
        from vllm import SamplingParams

        params = SamplingParams(**sampling_params_kwargs(sampling, self.tokenizer.eos_token_id, seed))
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompt_ids], params, use_tqdm=False)
        samples = []
        for out in outputs:
            row = []
            for completion in out.outputs:
                tokens = list(completion.token_ids)
                logps = [entry[token].logprob for token, entry in zip(tokens, completion.logprobs or [])]
                row.append((tokens, logps, completion.finish_reason == "stop"))
            samples.append(row)
        return rollout_from_samples(prompt_ids, samples, self.tokenizer)
