# SPDX-License-Identifier: Apache-2.0
"""A plain-PyTorch StreamingLLM reference for Llama-family HF checkpoints.

:class:`StreamingReference` is the schedule; :class:`StreamingLlamaReference`
runs a Llama with its own attention code, and
:class:`tests.reference_hf.StreamingHFReference` any RoPE family through
transformers' own modeling code.

Written from the paper, independent of the plugin: keys are cached *before*
RoPE, and every forward rotates the whole cache to positions ``0 .. L-1``
(sinks first, then the window, the chunk last), as mit-han-lab's
``pos_shift`` attention does. It follows the plugin's block-granular
schedule: before each chunk, whole blocks after the sink blocks are dropped
while the window holds more than ``ceil(W/B) * B`` tokens; prompt chunks are
at most ``max_chunk`` tokens and never reach ``max_model_len``.

With ``exact_sinks`` the paper's sink count holds below the block size: once
the window has rolled, attention skips cache slots ``[S, ceil(S/B) * B)``
(they stay in the cache, as in the plugin) and sees exactly S sinks directly
followed, in position space, by the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass
class StreamResult:
    prompt_logprobs: list[float] = field(default_factory=list)  # tokens 1..P-1
    tokens: list[int] = field(default_factory=list)
    top2: list[list[tuple[int, float]]] = field(default_factory=list)


class StreamingReference:
    """The plugin's schedule over a cache of raw keys; subclasses run a model.

    A subclass calls ``__init__`` with the policy, keeps ``token_ids`` (the
    tokens whose KV is cached) and implements :attr:`cache_len`,
    :meth:`reset`, :meth:`drop` and :meth:`forward`.

    Args:
        num_sink_tokens: S; the cache keeps ``ceil(S/B)`` whole blocks.
        sink_window: W; the window keeps at most ``ceil(W/B) * B`` tokens.
        block_size: B, the engine's block size.
        exact_sinks: after the first eviction attend S sinks, not
            ``ceil(S/B) * B`` slots (``--sink-exact-tokens``).
    """

    token_ids: list[int]

    def __init__(
        self,
        *,
        num_sink_tokens: int,
        sink_window: int,
        block_size: int,
        exact_sinks: bool = False,
    ):
        self.block_size = block_size
        self.num_sink_tokens = num_sink_tokens
        self.sink_slots = math.ceil(num_sink_tokens / block_size) * block_size
        self.window_slots = math.ceil(sink_window / block_size) * block_size
        self.exact_sinks = exact_sinks
        self.masked = False  # exact sinks and the window has rolled

    @property
    def cache_len(self) -> int:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def drop(self, start: int, end: int) -> None:
        """Removes cache slots ``start .. end-1`` from every layer."""
        raise NotImplementedError

    def forward(self, token_ids: list[int]) -> torch.Tensor:
        """Appends a chunk to the cache; returns its logits ``[n, vocab]``."""
        raise NotImplementedError

    def evict(self) -> int:
        """Drops whole blocks after the sinks while the window is too long."""
        dropped = 0
        while self.cache_len - self.sink_slots > self.window_slots:
            start, end = self.sink_slots, self.sink_slots + self.block_size
            self.drop(start, end)
            del self.token_ids[start:end]
            dropped += self.block_size
        if dropped and self.exact_sinks and self.num_sink_tokens < self.sink_slots:
            self.masked = True  # kept through preemption, as in the plugin
        return dropped

    def attended(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cache slots attended over a cache of ``length``, and their positions.

        Positions are the slots, except that masked exact sinks sit right
        before the window: slot ``j < S`` is at ``sink_slots - S + j``.
        """
        slots = torch.arange(length)
        if not self.masked:
            return slots, slots
        kept = torch.cat((slots[: self.num_sink_tokens], slots[self.sink_slots :]))
        shift = self.sink_slots - self.num_sink_tokens
        return kept, torch.where(kept < self.num_sink_tokens, kept + shift, kept)

    def prefill(
        self,
        prompt: list[int],
        *,
        max_chunk: int,
        max_model_len: int,
        logprobs: list[float] | None = None,
    ) -> torch.Tensor:
        """Feeds ``prompt`` in chunks, evicting before each; last logprobs."""
        pos, logits = 0, None
        while pos < len(prompt):
            self.evict()
            remaining = len(prompt) - pos
            # The plugin's rule: while the prompt does not fit the worker's
            # row (max_model_len - 1 tokens), a chunk stops one short of it.
            spare = 2 if self.cache_len + remaining > max_model_len - 1 else 1
            n = min(remaining, max_chunk, max_model_len - self.cache_len - spare)
            logits = self.forward(prompt[pos : pos + n]).log_softmax(-1)
            if logprobs is not None:
                targets = prompt[pos + 1 : pos + n + 1]
                logprobs.extend(logits[j, t].item() for j, t in enumerate(targets))
            pos += n
        return logits[-1]

    def stream(
        self,
        prompt: list[int],
        *,
        max_new_tokens: int,
        max_chunk: int,
        max_model_len: int,
        preempt_at: tuple[int, ...] = (),
    ) -> StreamResult:
        """Teacher-forces ``prompt`` in chunks, then decodes greedily.

        ``preempt_at`` lists output counts at which the engine preempted the
        stream: there the cache is dropped and rebuilt by re-prefilling the
        tokens it held plus the pending token (the plugin's resume rule).
        """
        result = StreamResult()
        chunking = dict(max_chunk=max_chunk, max_model_len=max_model_len)
        last = self.prefill(prompt, logprobs=result.prompt_logprobs, **chunking)
        for k in range(max_new_tokens):
            top = last.topk(2)
            result.top2.append(
                list(zip(top.indices.tolist(), top.values.tolist(), strict=True))
            )
            token = int(top.indices[0])
            result.tokens.append(token)
            self.evict()
            if k + 1 in preempt_at:
                held = self.token_ids + [token]
                self.reset()
                last = self.prefill(held, **chunking)
            else:
                last = self.forward([token]).log_softmax(-1)[0]
        return result


class StreamingLlamaReference(StreamingReference):
    """Runs one stream through a Llama with a sink + window cache."""

    def __init__(
        self,
        model_dir,
        *,
        num_sink_tokens,
        sink_window,
        block_size,
        dtype=torch.float32,
        exact_sinks=False,
    ):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, torch_dtype=dtype
        ).eval()
        cfg = self.model.config
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or (
            cfg.hidden_size // cfg.num_attention_heads
        )
        theta = getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"]
        self.inv_freq = 1.0 / theta ** (
            torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim
        )
        super().__init__(
            num_sink_tokens=num_sink_tokens,
            sink_window=sink_window,
            block_size=block_size,
            exact_sinks=exact_sinks,
        )
        self.num_layers = len(self.model.model.layers)
        self.reset()

    def reset(self) -> None:
        """Empties the cache (what a preempted request starts from)."""
        self.keys: list[torch.Tensor | None] = [None] * self.num_layers
        self.values: list[torch.Tensor | None] = [None] * self.num_layers
        self.token_ids: list[int] = []  # the tokens whose KV is cached

    @property
    def cache_len(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[0]

    def _rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        angles = positions.to(torch.float64)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((angles, angles), dim=-1)
        cos = emb.cos().to(x.dtype)[:, None, :]
        sin = emb.sin().to(x.dtype)[:, None, :]
        return x * cos + rotate_half(x) * sin

    def drop(self, start: int, end: int) -> None:
        for i in range(len(self.keys)):
            self.keys[i] = torch.cat((self.keys[i][:start], self.keys[i][end:]))
            self.values[i] = torch.cat((self.values[i][:start], self.values[i][end:]))

    @torch.no_grad()
    def forward(self, token_ids: list[int]) -> torch.Tensor:
        """Appends a chunk to the cache; returns its logits ``[n, vocab]``."""
        model = self.model.model
        n, past = len(token_ids), self.cache_len
        self.token_ids.extend(token_ids)
        hidden = model.embed_tokens(torch.tensor(token_ids))
        q_pos = torch.arange(past, past + n)
        k_slots, k_pos = self.attended(past + n)
        mask = k_slots[None, :] <= q_pos[:, None]
        for i, layer in enumerate(model.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(n, self.num_heads, self.head_dim)
            k = attn.k_proj(x).view(n, self.num_kv_heads, self.head_dim)
            v = attn.v_proj(x).view(n, self.num_kv_heads, self.head_dim)
            if self.keys[i] is None:
                self.keys[i], self.values[i] = k, v
            else:
                self.keys[i] = torch.cat((self.keys[i], k))
                self.values[i] = torch.cat((self.values[i], v))
            keys = self._rope(self.keys[i][k_slots], k_pos)
            q = self._rope(q, q_pos)
            group = self.num_heads // self.num_kv_heads
            keys = keys.repeat_interleave(group, dim=1)
            values = self.values[i][k_slots].repeat_interleave(group, dim=1)
            scores = torch.einsum("qhd,khd->hqk", q, keys) / math.sqrt(self.head_dim)
            scores = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            out = torch.einsum("hqk,khd->qhd", scores, values).reshape(n, -1)
            hidden = hidden + attn.o_proj(out)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return self.model.lm_head(model.norm(hidden)).float()
