# SPDX-License-Identifier: Apache-2.0
"""Model Runner V1: apply evictions, return absolute prompt logprobs, raw keys.

Target:      vllm.v1.worker.gpu_model_runner.GPUModelRunner.{_update_states,
             _get_prompt_logprobs_dict}, and ``load_model`` of it and of
             vllm.v1.worker.cpu_model_runner.CPUModelRunner
Process:     worker
vLLM:        ==0.32.0 (verified 0.32.0, CPU build)
Why:         A running request's token state only ever grows in V1; after the
             scheduler evicts tokens of a sink request, the worker's copy of
             its prompt/output tokens must shrink the same way before vLLM
             re-adds the request. Prompt logprobs are indexed by cache
             position, which no longer equals the absolute position. The
             model's rotary must stop rotating keys so the cache holds raw
             keys (attention rotates them from in-cache positions). A prompt
             longer than the worker's token row (max_model_len) reaches the
             worker in parts, as the window rolls.
How:         ``_update_states``: trim the states named in
             ``scheduler_output.sink_evictions`` and append the prompt tokens
             revealed with them, then call the original (which replaces the
             block row of these "resumed" requests).
             ``_get_prompt_logprobs_dict``: swap finished offset buffers for
             their full ones. ``load_model``: after the original, wrap each
             attention block's rotary with QueryOnlyRotary.
             Nothing changes unless additional_config kv_policy is "sink".
Upstream:    none yet: needs a "compact a running request" message in V1.
Remove when: vLLM can shrink a running request's state and block row.
Tests:       tests/e2e/test_sink_core.py
"""

from __future__ import annotations

from vllm_sink_plugin.patches._base import wrap_attribute


def _enabled(runner) -> bool:
    from vllm_sink_plugin.config import StreamingSinkConfig

    cached = getattr(runner, "_sink_policy_enabled", None)
    if cached is None:
        config = runner.vllm_config.additional_config
        cached = StreamingSinkConfig.from_mapping(config).enabled
        runner._sink_policy_enabled = cached
    return cached


def _update_states(original):
    def _update_states(self, scheduler_output):
        evictions = getattr(scheduler_output, "sink_evictions", None)
        if evictions:
            from vllm_sink_plugin.worker.evictions import (
                apply_eviction,
                reveal_prompt,
            )

            for req_id, (start, count, revealed) in evictions.items():
                apply_eviction(self.requests[req_id], start, count)
                if revealed:
                    reveal_prompt(self.requests[req_id], revealed)
        return original(self, scheduler_output)

    return _update_states


def _get_prompt_logprobs_dict(original):
    def _get_prompt_logprobs_dict(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if result and _enabled(self):
            from vllm_sink_plugin.worker.evictions import full_prompt_logprobs

            for req_id, tensors in result.items():
                if tensors is not None:
                    result[req_id] = full_prompt_logprobs(
                        self.requests[req_id], tensors
                    )
        return result

    return _get_prompt_logprobs_dict


def _load_model(original):
    def load_model(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if _enabled(self):
            from vllm_sink_plugin.attention.rope import install_query_only_rope

            install_query_only_rope(self.model)
        return result

    return load_model


def apply() -> None:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    wrap_attribute(GPUModelRunner, "_update_states", _update_states)
    wrap_attribute(
        GPUModelRunner, "_get_prompt_logprobs_dict", _get_prompt_logprobs_dict
    )
    wrap_attribute(GPUModelRunner, "load_model", _load_model)
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner
    except ImportError:  # a GPU build without the CPU runner
        return
    wrap_attribute(CPUModelRunner, "load_model", _load_model)
