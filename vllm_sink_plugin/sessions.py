# SPDX-License-Identifier: Apache-2.0
"""Unbounded multi-turn chats on vLLM 0.32's streaming-input requests.

One conversation is one engine request fed by an async generator of
``StreamingInput`` (``AsyncLLM.generate``): after each answer the request
waits, holding its KV cache, for the next user turn, so earlier turns are
never prefilled again. With the sink policy that cache is bounded: the
conversation can go on forever in constant memory.

What the engine holds after turn k (ChatML shown; any template works)::

    <|im_start|>system ... <|im_start|>user Q1 <|im_end|> <|im_start|>assistant
    A1 (minus the last sampled token, which vLLM does not feed back)
    -- turn k+1 input, rendered by the chat template as the text that
       follows A1: "<|im_end|>\\n<|im_start|>user\\nQ2<|im_end|>\\n..." --

Example::

    async with ChatSession(engine, params, system="You are terse.") as chat:
        for question in questions:
            turn = await chat.send(question)
            print(turn.text, turn.ttft_s)
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

_ids = itertools.count()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Turn:
    """One answered turn.

    Attributes:
        text: the answer.
        token_ids: its tokens (the last one is not in the engine's cache).
        finish_reason: ``"stop"`` or ``"length"`` (this turn's max_tokens).
        input_tokens: tokens of this turn's input.
        ttft_s: seconds from ``send`` to the first answer token.
        total_s: seconds from ``send`` to the end of the answer.
    """

    text: str
    token_ids: list[int]
    finish_reason: str | None
    input_tokens: int
    ttft_s: float
    total_s: float


class ChatSession:
    """A multi-turn chat on one streaming-input request of an ``AsyncLLM``.

    Args:
        engine: the ``AsyncLLM`` (built with ``--kv-policy sink`` for
            constant memory; works on any engine).
        sampling_params: per-turn sampling (``max_tokens`` is per turn; no
            stop strings: vLLM refuses them for streaming input; answers
            are read as deltas whatever ``output_kind`` says).
            ``extra_args`` may carry the per-request sink fields (fixed by
            the first turn).
        system: an optional system message.
        request_id: the engine request id (default: a fresh one).
    """

    def __init__(
        self,
        engine: Any,
        sampling_params: Any,
        *,
        system: str | None = None,
        request_id: str | None = None,
    ):
        from vllm.sampling_params import RequestOutputKind

        self.engine = engine
        # Turns are read as deltas (FINAL_ONLY is refused for streaming input).
        self.sampling_params = sampling_params.clone()
        self.sampling_params.output_kind = RequestOutputKind.DELTA
        self.request_id = request_id or f"chat-session-{next(_ids)}"
        self.tokenizer = engine.tokenizer
        self.messages: list[dict[str, str]] = (
            [{"role": "system", "content": system}] if system else []
        )
        self._inputs: asyncio.Queue = asyncio.Queue()
        self._outputs: AsyncIterator | None = None
        self._last: Turn | None = None
        # The conversation text the engine's cache has seen (until evicted).
        self._held_text = ""

    async def __aenter__(self) -> ChatSession:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _input_stream(self):
        from vllm.engine.protocol import StreamingInput

        while (prompt := await self._inputs.get()) is not None:
            yield StreamingInput(prompt=prompt)

    def _next_input_ids(self, user: str) -> list[int]:
        """The tokens that follow what the engine holds, for a new user turn."""
        messages = self.messages + [{"role": "user", "content": user}]
        full = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        if not full.startswith(self._held_text):
            raise ValueError(
                "the chat template does not render the conversation as a "
                "prefix of its continuation; ChatSession needs one that does"
            )
        ids = self.tokenizer.encode(
            full[len(self._held_text) :], add_special_tokens=False
        )
        if self._last is not None and self._last.finish_reason == "length":
            # Stopped by max_tokens: its last token was sampled, not fed.
            ids = self._last.token_ids[-1:] + ids
        self._held_text = full
        return ids

    async def send(self, user: str) -> Turn:
        """Sends one user turn and waits for the whole answer."""
        from vllm.inputs import TokensPrompt

        input_ids = self._next_input_ids(user)
        start = time.perf_counter()
        self._inputs.put_nowait(TokensPrompt(prompt_token_ids=input_ids))
        if self._outputs is None:
            self._outputs = self.engine.generate(
                self._input_stream(), self.sampling_params, self.request_id
            )
        text, token_ids, first = [], [], None
        finish_reason = None
        async for output in self._outputs:
            completion = output.outputs[0]
            if completion.token_ids and first is None:
                first = time.perf_counter()
            text.append(completion.text)
            token_ids.extend(completion.token_ids)
            if completion.finish_reason is not None or output.finished:
                finish_reason = completion.finish_reason
                break
        end = time.perf_counter()
        turn = Turn(
            text="".join(text),
            token_ids=token_ids,
            finish_reason=finish_reason,
            input_tokens=len(input_ids),
            ttft_s=(first or end) - start,
            total_s=end - start,
        )
        self._held_text += turn.text
        self.messages += [
            {"role": "user", "content": user},
            {"role": "assistant", "content": turn.text},
        ]
        self._last = turn
        return turn

    async def close(self) -> None:
        """Ends the session; the engine frees its KV cache."""
        self._inputs.put_nowait(None)
        if self._outputs is not None:
            async for _ in self._outputs:
                pass
            self._outputs = None
