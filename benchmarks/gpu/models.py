# SPDX-License-Identifier: Apache-2.0
"""Model folders holding only ``config.json``: engines load dummy weights.

Timing does not depend on weight values, so the benchmark needs no download:
vLLM builds the architecture from the config and fills it with random values
(``load_format="dummy"``); prompts are token ids (``skip_tokenizer_init``).
"""

from __future__ import annotations

import json
from pathlib import Path

_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "attention_bias": False,
    "mlp_bias": False,
}

CONFIGS: dict[str, dict] = {
    # Llama-3.2-1B-like, with a 32k vocabulary.
    "llama-1b": {
        **_LLAMA,
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "intermediate_size": 8192,
        "vocab_size": 32000,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    },
    # Llama-2-7B: the paper's re-computation comparison.
    "llama2-7b": {
        **_LLAMA,
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "head_dim": 128,
        "intermediate_size": 11008,
        "vocab_size": 32000,
        "max_position_embeddings": 8192,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    },
    # Smoke runs (CPU CI): head_dim 64, as vLLM's CPU attention needs.
    "tiny-llama": {
        **_LLAMA,
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 64,
        "intermediate_size": 256,
        "vocab_size": 512,
        "max_position_embeddings": 8192,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    },
}


def write_model(root: Path, name: str) -> Path:
    """Writes ``root/name/config.json`` and returns the folder."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(CONFIGS[name], indent=2) + "\n")
    return folder


def vocab_size(name: str) -> int:
    return CONFIGS[name]["vocab_size"]
