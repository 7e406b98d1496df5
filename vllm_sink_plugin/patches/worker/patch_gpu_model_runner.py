# SPDX-License-Identifier: Apache-2.0
"""Model Runner V1: apply evictions, return absolute prompt logprobs, RoPE.

Target:      vllm.v1.worker.gpu_model_runner.GPUModelRunner.{_update_states,
             _get_prompt_logprobs_dict, _prepare_inputs,
             _build_attention_metadata}, and ``load_model`` of it and of
             vllm.v1.worker.cpu_model_runner.CPUModelRunner
Process:     worker
vLLM:        0.32.0, 0.33.0 (compat.SUPPORTED_VLLM; verified 0.32.0 CPU;
             0.32.0 and 0.33.0 CUDA, H100: tests/gpu)
Why:         A running request's token state only ever grows in V1; after the
             scheduler evicts tokens of a sink request, the worker's copy of
             its prompt/output tokens must shrink the same way before vLLM
             re-adds the request. Prompt logprobs are indexed by cache
             position, which no longer equals the absolute position. The
             model's rotary must stop rotating keys so the cache holds raw
             keys (attention rotates them from in-cache positions). A prompt
             longer than the worker's token row (max_model_len) reaches the
             worker in parts, as the window rolls. With rotated keys (GPU,
             vllm_sink_plugin.key_mode) keys are cached rotated once and
             RoPE must see ``cache position + E`` instead.
How:         ``_update_states``: trim the states named in the step's
             ``Eviction`` messages (vllm_sink_plugin.protocol) and append
             the prompt tokens revealed with them, then call the original
             (which replaces the block row of these "resumed" requests).
             ``_prepare_inputs``: lay out the step's ``SinkMask`` messages
             (exact sinks) in batch-row order; ``_build_attention_metadata``
             puts them on the step's attention metadata for the CPU
             attention (dummy and capture batches get none).
             ``_get_prompt_logprobs_dict``: swap finished offset buffers for
             their full ones. ``load_model``: after the original, wrap each
             attention block's rotary with QueryOnlyRotary (raw keys) or
             OffsetRotary (rotated keys; then ``_update_states`` also applies
             ``SinkViews`` and ``_prepare_inputs`` fills the RoPE table).
             Nothing changes unless additional_config kv_policy is "sink".
Upstream:    none yet: needs a "compact a running request" message in V1.
Remove when: vLLM can shrink a running request's state and block row.
Tests:       tests/e2e/test_sink_core.py, tests/e2e/test_rotated_keys.py
"""

from __future__ import annotations

from vllm_sink_plugin import protocol
from vllm_sink_plugin.patches._base import wrap_attribute
from vllm_sink_plugin.worker.runner_policy import (
    rotated_keys_installed,
    sink_enabled,
)


def _update_states(original):
    def _update_states(self, scheduler_output):
        evictions = protocol.read(scheduler_output).evictions
        if evictions:
            from vllm_sink_plugin.worker.evictions import (
                apply_eviction,
                reveal_prompt,
            )

            for req_id, eviction in evictions.items():
                apply_eviction(self.requests[req_id], eviction)
                if eviction.revealed:
                    reveal_prompt(self.requests[req_id], eviction.revealed)
        result = original(self, scheduler_output)
        if rotated_keys_installed(self):
            from vllm_sink_plugin.worker.rope_offsets import apply_output

            apply_output(self, scheduler_output)
        return result

    return _update_states


def _prepare_inputs(original):
    def _prepare_inputs(self, scheduler_output, num_scheduled_tokens, *args, **kw):
        result = original(self, scheduler_output, num_scheduled_tokens, *args, **kw)
        if sink_enabled(self) and not rotated_keys_installed(self):
            from vllm_sink_plugin.attention import sink_masks

            # Read by _build_attention_metadata of this step only.
            self._sink_mask_rows = sink_masks.batch_rows(
                protocol.read(scheduler_output).masks,
                self.input_batch.req_ids[: len(num_scheduled_tokens)],
            )
        if rotated_keys_installed(self):
            from vllm_sink_plugin.worker.rope_offsets import offsets_of

            num_tokens = scheduler_output.total_num_scheduled_tokens
            offsets_of(self).prepare(
                self.input_batch.req_ids[: len(num_scheduled_tokens)],
                num_scheduled_tokens,
                self.positions[:num_tokens],
            )
        return result

    return _prepare_inputs


def _build_attention_metadata(original):
    def _build_attention_metadata(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        rows = getattr(self, "_sink_mask_rows", None)
        if rows is not None:
            from vllm_sink_plugin.attention import sink_masks

            self._sink_mask_rows = None  # a later dummy batch gets none
            sink_masks.attach(result[0], rows)
        return result

    return _build_attention_metadata


def _get_prompt_logprobs_dict(original):
    def _get_prompt_logprobs_dict(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if result and sink_enabled(self):
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
        if sink_enabled(self):
            from vllm_sink_plugin.key_mode import rotated_keys

            if rotated_keys(self.vllm_config.additional_config):
                from vllm_sink_plugin.worker import rope_offsets

                rope_offsets.install(self, self.positions)
            else:
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
    wrap_attribute(GPUModelRunner, "_prepare_inputs", _prepare_inputs)
    wrap_attribute(
        GPUModelRunner, "_build_attention_metadata", _build_attention_metadata
    )
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():  # the CPU runner is imported only on CPU
        return
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner

    wrap_attribute(CPUModelRunner, "load_model", _load_model)
