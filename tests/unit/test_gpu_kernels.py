# SPDX-License-Identifier: Apache-2.0
"""The plugin's Triton kernels, run by Triton's interpreter on the CPU.

The sink-view writer is checked against the PyTorch path (``turn`` on
gathered blocks by float64 angles of E: NeoX and GPT-J pairing, partial
rotary, fp32 and bf16, E up to 1e9, the source blocks untouched); the
RoPE-table fill against float64 angles.
"""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    import triton.language as tl
    from vllm_sink_plugin.attention.offset_rope import turn
    from vllm_sink_plugin.worker.view_kernel import ViewWriter

    torch.manual_seed(0)
    for rot in (64, 32):
        for neox in (True, False):
            for dtype, tol in ((torch.float32, 1e-6), (torch.bfloat16, 0.04)):
                caches = [torch.randn(6, 2, 16, 128).to(dtype) for _ in range(3)]
                before = [c.clone() for c in caches]
                writer = ViewWriter.__new__(ViewWriter)  # no CUDA: fill by hand
                writer.ptrs = torch.tensor([c.data_ptr() for c in caches])
                _, writer.num_heads, writer.block_size, writer.width = caches[0].shape
                writer.strides = caches[0].stride()[:3]
                writer.dtype = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16}[
                    dtype
                ]
                writer.rotary_dim, writer.is_neox = rot, neox
                sinks, views = torch.tensor([1, 2]), torch.tensor([4, 5])
                offsets = torch.tensor([48, 10**9])  # E: any size (float64 angles)
                freqs = 1.0 / 10000.0 ** (
                    torch.arange(0, rot, 2, dtype=torch.float64) / rot
                )
                angles = offsets.double()[:, None] * freqs
                cos, sin = angles.cos().float(), angles.sin().float()
                writer.write(sinks, views, offsets, freqs)
                for cache, old in zip(caches, before):
                    want = old[sinks].clone()
                    keys = want[..., :rot]
                    c, s = cos[:, None, None], sin[:, None, None]
                    keys.copy_(turn(keys.float(), c, s, neox))
                    err = (cache[views].float() - want.float()).abs().max().item()
                    assert err <= tol, (rot, neox, dtype, err)
                    assert torch.equal(cache[sinks], old[sinks])
                    assert torch.equal(cache[:1], old[:1])
    print("OK")
    """
)


def test_view_kernel_matches_pytorch_under_the_interpreter():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


TABLE_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from vllm_sink_plugin.attention.rope_table_kernel import fill_table

    half = 32
    freqs = 1.0 / 10000.0 ** (torch.arange(0, 2 * half, 2, dtype=torch.float64) / 64)
    freqs = freqs.float().double()  # the fp32 frequencies vLLM's tables use
    angles = torch.arange(4096, dtype=torch.float64)[:, None] * freqs
    stock = torch.cat((angles.cos(), angles.sin()), -1).float()
    positions = torch.tensor([0, 5, 37, 4000])
    offsets = torch.tensor([0, 16, 4096, 10**9])
    want = (positions + offsets).double()[:, None] * freqs
    want = torch.cat((want.cos(), want.sin()), -1)
    for dtype, tol in ((torch.float32, 1e-6), (torch.bfloat16, 1e-2)):
        table = torch.zeros(8, 2 * half, dtype=dtype)
        fill_table(stock.to(dtype), table, positions, offsets, freqs)
        err = (table[:4].double() - want).abs().max().item()
        assert err <= tol, (dtype, err)
        assert not table[4:].any()
    print("OK")
    """
)


def test_rope_table_kernel_turns_rows_by_large_offsets():
    """Row t = angle of (position + E) even for E = 1e9 (float64 reduction)."""
    result = subprocess.run(
        [sys.executable, "-c", TABLE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
