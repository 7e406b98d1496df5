# SPDX-License-Identifier: Apache-2.0
"""Turns a validated policy into engine settings, once, at config time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vllm_sink_plugin.config import StreamingSinkConfig, StreamingSinkConfigError

SCHEDULER_CLS = "vllm_sink_plugin.core.scheduler.StreamingSinkScheduler"
ASYNC_SCHEDULER_CLS = "vllm_sink_plugin.core.scheduler.StreamingSinkAsyncScheduler"

if TYPE_CHECKING:
    from vllm.config import ModelConfig, VllmConfig


def unsupported_features(vllm_config: VllmConfig) -> list[str]:
    """Features the sink policy refuses, each named for the error message."""
    found = []
    if vllm_config.speculative_config is not None:
        found.append("speculative decoding (--speculative-config)")
    if vllm_config.kv_transfer_config is not None:
        found.append("KV connectors (--kv-transfer-config)")
    pp = vllm_config.parallel_config.pipeline_parallel_size
    if pp > 1:
        # Untested: PP keeps several batches in flight (a batch queue), which
        # the scheduler's evictions do not account for yet.
        found.append(
            f"pipeline parallelism (--pipeline-parallel-size {pp}), not yet; "
            "use --tensor-parallel-size"
        )
    if vllm_config.lora_config is not None:
        # Untested: adapters change q/k/v, which evictions and the sink views
        # would have to follow per request.
        found.append("LoRA adapters (--enable-lora), not yet")
    model_config = vllm_config.model_config
    if model_config.is_multimodal_model:
        found.append(
            "multimodal models (image/audio placeholders are absolute prompt "
            "offsets, which evictions would break)"
        )
    found += unsupported_attention(model_config)
    hf_text = model_config.hf_text_config
    if getattr(hf_text, "sliding_window", None):
        found.append(
            f"sliding-window attention (sliding_window="
            f"{hf_text.sliding_window} in the model config)"
        )
    layer_types = getattr(hf_text, "layer_types", None) or ()
    if any(t != "full_attention" for t in layer_types):
        found.append("hybrid models (layer_types other than full_attention)")
    rope = (
        getattr(hf_text, "rope_parameters", None)
        or getattr(hf_text, "rope_scaling", None)
        or {}
    )
    rope_type = rope.get("rope_type") or rope.get("type")
    if rope_type in ("dynamic", "longrope", "mrope"):
        found.append(f"position-nonlinear RoPE (rope_type={rope_type!r})")
    return found


def unsupported_attention(model_config: ModelConfig) -> list[str]:
    """Attention the raw/offset-key designs cannot rewrite, read from config.

    Both designs need one RoPE applied by vLLM's ``rotary_emb`` right before
    a standard ``Attention`` layer: ALiBi has no rotation to redo, M-RoPE
    turns by 3-D positions, MLA caches a latent with a separate RoPE part,
    and the Transformers backend applies RoPE inside transformers' code.
    """
    found = []
    if model_config.uses_alibi:
        found.append("ALiBi position biases (no RoPE to apply at cache positions)")
    if model_config.uses_mrope:
        found.append("multimodal M-RoPE (positions are 3-D, not cache indices)")
    if model_config.use_mla:
        found.append("multi-head latent attention (MLA), whose cache holds latents")
    if model_config.using_transformers_backend():
        arch = ", ".join(model_config.architectures)
        found.append(
            f"the Transformers modeling backend ({arch} has no vLLM-native "
            f"implementation; its RoPE runs inside transformers' code)"
        )
    return found


def apply_policy(vllm_config: VllmConfig) -> StreamingSinkConfig:
    """Validates the policy of a freshly built VllmConfig and logs it.

    Raises:
        StreamingSinkConfigError: a bad value or an unsupported feature.
    """
    sink = StreamingSinkConfig.from_mapping(vllm_config.additional_config)
    if not sink.enabled:
        return sink
    block_size = vllm_config.cache_config.block_size
    max_model_len = vllm_config.model_config.max_model_len
    sink.check_engine(block_size=block_size, max_model_len=max_model_len)
    refused = unsupported_features(vllm_config)
    if refused:
        raise StreamingSinkConfigError(
            "--kv-policy sink does not support: " + "; ".join(refused)
        )
    from vllm_sink_plugin.log import init_logger

    logger = init_logger(__name__)
    from vllm_sink_plugin.key_mode import rotated_keys

    rotated = rotated_keys(sink)
    scheduler_config = vllm_config.scheduler_config
    v2 = vllm_config.use_v2_model_runner
    if scheduler_config.async_scheduling and not (v2 and rotated):
        raise StreamingSinkConfigError(
            "--kv-policy sink supports async scheduling with Model Runner V2 on "
            "GPU only; pass --no-async-scheduling"
        )
    cache_dtype = vllm_config.cache_config.cache_dtype
    if rotated and cache_dtype not in ("auto", None):
        raise StreamingSinkConfigError(
            f"--kv-policy sink turns cached sink keys and needs an unquantized "
            f"KV cache; got --kv-cache-dtype {cache_dtype}"
        )
    if sink.sink_exact_tokens and rotated:
        raise StreamingSinkConfigError(
            "--sink-exact-tokens (additional_config['sink_exact_tokens']) needs "
            "the raw-key CPU backend: with rotated keys (GPU, or "
            "VLLM_SINK_ROTATED_KEYS=1 on CPU) vLLM's attention kernels attend whole "
            f"KV blocks, so the sinks are ceil(S/B) blocks of {block_size} "
            "tokens; drop the flag"
        )
    if v2 and not rotated:
        raise StreamingSinkConfigError(
            "--kv-policy sink with raw keys (CPU) needs Model Runner V1; unset "
            "VLLM_USE_V2_MODEL_RUNNER or set it to 0"
        )
    scheduler_config.scheduler_cls = (
        ASYNC_SCHEDULER_CLS if scheduler_config.async_scheduling else SCHEDULER_CLS
    )
    logger.info(
        "StreamingLLM policy: %d sink tokens (%d blocks%s) + window of %d tokens "
        "(%d blocks), block size %d, max_model_len %d, sink prefill chunks <= %d, "
        "%s keys, model runner %s, %s scheduling",
        sink.num_sink_tokens,
        sink.num_sink_blocks(block_size),
        ", exact" if sink.sink_exact_tokens else "",
        sink.sink_window,
        sink.num_window_blocks(block_size),
        block_size,
        max_model_len,
        sink.prefill_chunk(block_size),
        "rotated" if rotated else "raw",
        "V2" if v2 else "V1",
        "async" if scheduler_config.async_scheduling else "synchronous",
    )
    return sink
