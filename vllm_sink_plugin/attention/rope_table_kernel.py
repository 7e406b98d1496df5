# SPDX-License-Identifier: Apache-2.0
"""One Triton launch fills the per-step RoPE table (GPU).

Program ``t`` writes row ``t``: the stock cos/sin row of the token's cache
position, turned by its offset ``E`` (angle ``E * freq`` reduced modulo
2*pi in float64, so any ``E`` keeps full precision)::

    cos_p, sin_p = stock[pos[t], :half], stock[pos[t], half:]
    a            = (E[t] * freq) mod 2*pi                    (float64)
    table[t]     = [cos_p*cos a - sin_p*sin a, sin_p*cos a + cos_p*sin a]
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

# torch dtype -> Triton dtype of the caches and tables the kernels write.
TRITON_DTYPES = {
    torch.bfloat16: tl.bfloat16,
    torch.float16: tl.float16,
    torch.float32: tl.float32,
}


@triton.jit
def turn_angle(offset, freqs, TWO_PI: tl.constexpr):
    """``(offset * freqs) mod 2*pi`` in float64, as float32 for cos/sin.

    ``offset`` is int64 (any size); ``freqs`` float64. Shared by the table
    fill and the sink-view writer so both turn by exactly the same angles.
    """
    angle = offset.to(tl.float64) * freqs
    return (angle - tl.floor(angle / TWO_PI) * TWO_PI).to(tl.float32)


@triton.jit
def _fill_table_kernel(
    stock_ptr,  # [max_position, 2 * HALF]
    table_ptr,  # [rows, 2 * HALF]
    positions_ptr,  # [n] int64
    offsets_ptr,  # [n] int64
    freqs_ptr,  # [HALF] float64
    HALF: tl.constexpr,
    PAD: tl.constexpr,  # next power of two >= HALF
    TWO_PI: tl.constexpr,
    DTYPE: tl.constexpr,
):
    t = tl.program_id(0)
    pos = tl.load(positions_ptr + t)
    offset = tl.load(offsets_ptr + t)
    i = tl.arange(0, PAD)
    inside = i < HALF
    row = stock_ptr + pos * (2 * HALF)
    cos_p = tl.load(row + i, mask=inside, other=1.0).to(tl.float32)
    sin_p = tl.load(row + HALF + i, mask=inside, other=0.0).to(tl.float32)
    angle = turn_angle(offset, tl.load(freqs_ptr + i, mask=inside, other=0.0), TWO_PI)
    cos_e, sin_e = tl.cos(angle), tl.sin(angle)
    out = table_ptr + t * (2 * HALF)
    tl.store(out + i, (cos_p * cos_e - sin_p * sin_e).to(DTYPE), mask=inside)
    tl.store(out + HALF + i, (sin_p * cos_e + cos_p * sin_e).to(DTYPE), mask=inside)


def fill_table(
    stock: torch.Tensor,
    table: torch.Tensor,
    positions: torch.Tensor,
    offsets: torch.Tensor,
    frequencies: torch.Tensor,
) -> None:
    """Rows ``0 .. n-1`` of ``table`` for ``positions``/``offsets`` (both ``[n]``)."""
    half = stock.shape[1] // 2
    _fill_table_kernel[(positions.shape[0],)](
        stock,
        table,
        positions,
        offsets,
        frequencies,
        HALF=half,
        PAD=triton.next_power_of_2(half),
        TWO_PI=2 * math.pi,
        DTYPE=TRITON_DTYPES[table.dtype],
    )
