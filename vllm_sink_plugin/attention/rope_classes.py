# SPDX-License-Identifier: Apache-2.0
"""The vLLM rotary-embedding classes the sink policy supports: one table.

Both ways the plugin applies RoPE to a cache that rolls read this table, by
the same key (the class's module and name):

* raw keys (:mod:`vllm_sink_plugin.attention.rope`, CPU attention): the
  model's rotary rotates only the query, and attention rotates the gathered
  raw keys at their in-cache positions with the class's own
  ``forward_native``;
* rotated keys (:mod:`vllm_sink_plugin.attention.offset_rope`, GPU): each
  token reads the stock cos/sin row of its cache position turned by ``E``
  (tokens evicted) times the class's :attr:`RopeClass.frequencies`.

Both need an angle that is position x frequency, a fixed function of one
integer position. Only these exact classes qualify: a subclass (M-RoPE,
Fourier, dynamic NTK, ...) may change the angle, so it is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

ROPE_PACKAGE = "vllm.model_executor.layers.rotary_embedding"


@dataclasses.dataclass(frozen=True)
class RopeClass:
    """One supported rotary class and what the plugin needs of it.

    Attributes:
        qualname: ``module.Class`` that ``type(rotary)`` must match exactly
            (the key of :data:`SUPPORTED_ROPE`).
        frequencies: the angular frequencies ``[rotary_dim // 2]`` the
            class's cos/sin cache uses, read by the offset RoPE.
    """

    qualname: str
    frequencies: Callable[[nn.Module], torch.Tensor]

    @property
    def name(self) -> str:
        """The class name alone (as error messages list it)."""
        return self.qualname.rpartition(".")[2]


def _base_frequencies(rotary) -> torch.Tensor:
    return rotary._compute_inv_freq(rotary.base)


def _yarn_frequencies(rotary) -> torch.Tensor:
    return rotary._compute_inv_freq(rotary.scaling_factor)


def _linear_frequencies(rotary) -> torch.Tensor:
    factors = rotary.scaling_factors
    if len(factors) != 1:
        raise ValueError(
            f"--kv-policy sink supports linear RoPE scaling with one factor, "
            f"got {factors}"
        )
    return rotary._compute_inv_freq(rotary.base) / float(factors[0])


SUPPORTED_ROPE: dict[str, RopeClass] = {
    rope.qualname: rope
    for rope in (
        RopeClass(f"{ROPE_PACKAGE}.base.RotaryEmbedding", _base_frequencies),
        RopeClass(
            f"{ROPE_PACKAGE}.linear_scaling_rope.LinearScalingRotaryEmbedding",
            _linear_frequencies,
        ),
        RopeClass(
            f"{ROPE_PACKAGE}.ntk_scaling_rope.NTKScalingRotaryEmbedding",
            _base_frequencies,
        ),
        RopeClass(
            f"{ROPE_PACKAGE}.llama3_rope.Llama3RotaryEmbedding", _base_frequencies
        ),
        RopeClass(
            f"{ROPE_PACKAGE}.yarn_scaling_rope.YaRNScalingRotaryEmbedding",
            _yarn_frequencies,
        ),
    )
}


def qualname(obj: object) -> str:
    """``module.Class`` of ``obj``'s type: the key into :data:`SUPPORTED_ROPE`."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def rope_class(rotary: nn.Module | None) -> RopeClass | None:
    """The table's entry for ``rotary``, or None if its class is not supported."""
    if rotary is None:
        return None
    return SUPPORTED_ROPE.get(qualname(rotary))


def supported_names() -> list[str]:
    """The supported class names, sorted (for error messages)."""
    return sorted(rope.name for rope in SUPPORTED_ROPE.values())
