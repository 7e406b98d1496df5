# SPDX-License-Identifier: Apache-2.0
"""The plugin's configuration surface: one frozen spec, validated once.

The same three settings arrive by two roads and end up in one place,
``VllmConfig.additional_config``::

    vllm serve M --kv-policy sink --num-sink-tokens 4 --sink-window 1020
    LLM(M, additional_config={"kv_policy": "sink", "num_sink_tokens": 4,
                              "sink_window": 1020})

Paper vocabulary -> ours: ``start_size`` -> ``num_sink_tokens``,
``recent_size`` -> ``sink_window``.

Cache layout of one sink request (block size B = 4, S = 2 sinks, W = 8)::

    block:   | 0: sinks  | 1: window | 2: window | 3: chunk |
    token:   | s s . .   | w w w w   | w w w w   | q . . .  |
               ^^^ S=2 sink tokens; the rest of block 0 is never refilled
                         ^^^^^^^^^^^^^^^^^^^^^ ceil(W/B) = 2 blocks
                                                 ^^^ blocks of the chunk
                                                     being scheduled

The sinks occupy whole blocks (``ceil(S/B)``); the unused slots of the last
sink block are the tokens that followed the sinks in the stream and are kept
with them (so up to ``B - 1`` extra tokens stay visible: the rounding is
documented in the README). With ``--sink-exact-tokens`` (raw-key CPU backend
only) attention skips those slots once the window has rolled, so exactly S
sinks stay visible, as in the paper::

    block:   | 0: sinks  | 1: window | 2: window |
    token:   | s s x x   | w w w w   | w w w w   |    x: held, never attended
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

KV_POLICIES = ("none", "sink")
DEFAULT_NUM_SINK_TOKENS = 4
DEFAULT_SINK_WINDOW = 1020
# Most prompt tokens of one sink request (stock vLLM's limit, max_model_len,
# does not apply: the prompt streams through the cache). With prompt_logprobs=k
# the prompt may have at most this many / (k + 1) tokens, so the logprob rows
# the worker and the frontend keep stay bounded by the same number.
DEFAULT_SINK_MAX_PROMPT_TOKENS = 1 << 18
# Most output tokens of one sink request (max_tokens, and the default cap of
# $VLLM_SINK_DEFAULT_MAX_TOKENS): Model Runner V2 keeps prompt_len + max_tokens
# in int32 rows, so 2**31 - 1 would crash the engine; 2**30 leaves room for any
# prompt row (max_model_len < 2**30) and is ~12 days of decoding at 1000 tok/s.
SINK_MAX_TOKENS_LIMIT = 1 << 30

# (additional_config key, CLI flag) for every setting, in the order shown.
FLAGS = {
    "kv_policy": "--kv-policy",
    "num_sink_tokens": "--num-sink-tokens",
    "sink_window": "--sink-window",
    "sink_prefill_chunk": "--sink-prefill-chunk",
    "sink_request_default": "--sink-request-default",
    "pin_system_prompt": "--sink-pin-system-prompt",
    "sink_exact_tokens": "--sink-exact-tokens",
    "sink_max_prompt_tokens": "--sink-max-prompt-tokens",
}


class StreamingSinkConfigError(ValueError):
    """A bad sink setting; the message names the flag and the accepted range."""


def _name(key: str) -> str:
    return f"{FLAGS[key]} (additional_config['{key}'])"


def check_policy(key: str, value: Any, name=_name) -> str:
    if value not in KV_POLICIES:
        raise StreamingSinkConfigError(
            f"{name(key)} must be one of {', '.join(map(repr, KV_POLICIES))}; "
            f"got {value!r}"
        )
    return value


def check_int(
    key: str,
    value: Any,
    minimum: int,
    name=_name,
    *,
    maximum: int = SINK_MAX_TOKENS_LIMIT,
) -> int:
    """``value`` if it is an int (not a bool) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise StreamingSinkConfigError(
            f"{name(key)} must be an integer >= {minimum}, got {value!r}"
        )
    if value < minimum:
        raise StreamingSinkConfigError(f"{name(key)} must be >= {minimum}, got {value}")
    if value > maximum:
        raise StreamingSinkConfigError(f"{name(key)} must be <= {maximum}, got {value}")
    return value


def check_bool(key: str, value: Any, name=_name) -> bool:
    # JSON clients may send 0/1 (vllm_xargs carries numbers, not booleans).
    if isinstance(value, bool | int) and value in (0, 1):
        return bool(value)
    raise StreamingSinkConfigError(f"{name(key)} must be true or false, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamingSinkConfig:
    """The StreamingLLM cache policy of an engine (or of one request).

    Attributes:
        kv_policy: ``"none"`` (stock vLLM) or ``"sink"`` (StreamingLLM).
        num_sink_tokens: S, the first tokens of a stream kept forever.
        sink_window: W, the most recent tokens kept besides the sinks.
        sink_prefill_chunk: most prompt tokens of a sink request run in one
            step (None: one window, ``ceil(W / B) * B``). The paper feeds one
            token at a time; larger chunks are faster and let a chunk's later
            tokens see up to ``chunk - 1`` more recent tokens.
        sink_request_default: the policy of requests that do not name one
            (``"sink"``, or ``"none"`` to make the policy opt-in per request).
        pin_system_prompt: chat requests keep their whole system prompt as
            sinks (at least ``num_sink_tokens``), like llama.cpp's ``--keep``.
        sink_exact_tokens: once a request's window rolls, attention sees
            exactly ``num_sink_tokens`` sinks instead of whole sink blocks
            (the rest of the last sink block stays allocated, masked). Needs
            the raw-key CPU backend; the GPU kernels attend whole blocks.
        sink_max_prompt_tokens: most prompt tokens of one sink request
            (divided by ``prompt_logprobs + 1`` when it asks for them); a
            longer prompt is refused (HTTP 400), never truncated.
    """

    kv_policy: str = "none"
    num_sink_tokens: int = DEFAULT_NUM_SINK_TOKENS
    sink_window: int = DEFAULT_SINK_WINDOW
    sink_prefill_chunk: int | None = None
    sink_request_default: str = "sink"
    pin_system_prompt: bool = False
    sink_exact_tokens: bool = False
    sink_max_prompt_tokens: int = DEFAULT_SINK_MAX_PROMPT_TOKENS

    @property
    def enabled(self) -> bool:
        return self.kv_policy == "sink"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> StreamingSinkConfig:
        """Builds and checks a config from ``additional_config``-style keys.

        Keys that do not belong to the plugin are left alone (other plugins
        share ``additional_config``). Settings given without
        ``kv_policy="sink"`` are refused rather than silently ignored.

        Raises:
            StreamingSinkConfigError: naming the flag and the accepted range.
        """
        raw = dict(raw or {})
        policy = check_policy("kv_policy", raw.get("kv_policy", "none"))
        config = cls(
            kv_policy=policy,
            num_sink_tokens=check_int(
                "num_sink_tokens",
                raw.get("num_sink_tokens", DEFAULT_NUM_SINK_TOKENS),
                0,
            ),
            sink_window=check_int(
                "sink_window", raw.get("sink_window", DEFAULT_SINK_WINDOW), 1
            ),
            sink_prefill_chunk=(
                None
                if raw.get("sink_prefill_chunk") is None
                else check_int("sink_prefill_chunk", raw["sink_prefill_chunk"], 1)
            ),
            sink_request_default=check_policy(
                "sink_request_default", raw.get("sink_request_default", "sink")
            ),
            pin_system_prompt=check_bool(
                "pin_system_prompt", raw.get("pin_system_prompt", False)
            ),
            sink_exact_tokens=check_bool(
                "sink_exact_tokens", raw.get("sink_exact_tokens", False)
            ),
            sink_max_prompt_tokens=check_int(
                "sink_max_prompt_tokens",
                raw.get("sink_max_prompt_tokens", DEFAULT_SINK_MAX_PROMPT_TOKENS),
                1,
                maximum=SINK_MAX_TOKENS_LIMIT,
            ),
        )
        given = [k for k in FLAGS if k != "kv_policy" and k in raw]
        if given and not config.enabled:
            raise StreamingSinkConfigError(
                f"{', '.join(_name(k) for k in given)} given but "
                f"{_name('kv_policy')} is {policy!r}; add --kv-policy sink"
            )
        config.check_sinks_below_window()
        return config

    def check_sinks_below_window(self, name=_name) -> None:
        """Raises StreamingSinkConfigError unless S < W."""
        if self.num_sink_tokens >= self.sink_window:
            raise StreamingSinkConfigError(
                f"{name('num_sink_tokens')} must be < {name('sink_window')}"
                f" (sinks < window); got {self.num_sink_tokens} >= "
                f"{self.sink_window}"
            )

    def check_engine(self, *, block_size: int, max_model_len: int, name=_name) -> None:
        """Checks the policy against the engine's block size and length.

        The whole cache (sink blocks + window blocks), the token being
        decoded and the token it samples must fit in ``max_model_len``
        positions, because in-cache positions are what RoPE sees.

        Raises:
            StreamingSinkConfigError: naming the flag and the accepted range.
        """
        if not self.enabled:
            return
        if self.sink_window < block_size:
            raise StreamingSinkConfigError(
                f"{name('sink_window')} must be >= the KV block size "
                f"({block_size}) so that at least one block rolls; got "
                f"{self.sink_window}"
            )
        # A full cache, one more token of a streamed prompt (or the decoded
        # token) and the token it samples.
        most = max_model_len - 3 - self.num_sink_blocks(block_size) * block_size
        most = most // block_size * block_size
        if self.num_window_blocks(block_size) * block_size > most:
            raise StreamingSinkConfigError(
                f"{name('sink_window')} must be <= {most} with "
                f"max_model_len={max_model_len}, block size {block_size} and "
                f"{self.num_sink_tokens} sink tokens (the cache must fit in "
                f"max_model_len positions); got {self.sink_window}. Lower "
                "--sink-window or raise --max-model-len."
            )

    def prefill_chunk(self, block_size: int) -> int:
        """Most prompt tokens of one sink request per step."""
        if self.sink_prefill_chunk is not None:
            return self.sink_prefill_chunk
        return self.num_window_blocks(block_size) * block_size

    def num_sink_blocks(self, block_size: int) -> int:
        """Whole blocks pinned for the sinks: ``ceil(S / B)``."""
        return -(-self.num_sink_tokens // block_size)

    def num_masked_sink_slots(self, block_size: int) -> int:
        """Sink-block slots attention skips after eviction (exact sinks)."""
        if not self.sink_exact_tokens:
            return 0
        return self.num_sink_blocks(block_size) * block_size - self.num_sink_tokens

    def num_window_blocks(self, block_size: int) -> int:
        """Blocks of the rolling window: ``ceil(W / B)``."""
        return -(-self.sink_window // block_size)
