# SPDX-License-Identifier: Apache-2.0
"""The model families of the support matrix: one table drives tests and README.

Each :class:`Family` is a config; :func:`tests.models.build.build_family`
saves it as a tiny random-weight checkpoint (no hub access). ``refused`` is
``None`` for a family the sink policy serves exactly (checked against
:class:`tests.reference_hf.StreamingHFReference`), else the reason its
startup error must name.
``python -m tests.models.matrix --write`` renders this table into the
README; ``tests/models/test_matrix.py`` fails when the two differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.conftest import TINY as TINY_LLAMA

# Every family starts from the tests' tiny shape (2 layers, head_dim 64).
TINY = {**TINY_LLAMA, "max_position_embeddings": 2048, "tie_word_embeddings": False}


DROP = object()  # a settings value that removes the key from TINY


def _rope(rope_type: str = "default", **params) -> dict:
    return {"rope_parameters": {"rope_type": rope_type, "rope_theta": 1e4, **params}}


@dataclass(frozen=True)
class Family:
    """One row of the support matrix.

    Args:
        name: the row label (family and what it exercises).
        examples: released checkpoints of the family.
        config_cls: the transformers config class name.
        settings: overrides of :data:`TINY` (:data:`DROP` removes a key);
            a refused family's config is its class defaults plus these (it
            is saved without weights).
        refused: the reason the startup error names, or None when exact.
        served: False when vLLM 0.32 itself cannot build the family (then
            ``refused`` is a phrase of vLLM's own error).
    """

    name: str
    examples: str
    config_cls: str
    settings: dict = field(default_factory=dict)
    refused: str | None = None
    served: bool = True

    @property
    def id(self) -> str:
        """A pytest id: the name up to its first " (" or " / ", lower-case."""
        short = self.name.split(" (")[0].split(" / ")[0]
        return short.lower().replace(" ", "-")

    def config(self):
        """The family's ``PretrainedConfig`` (tiny unless refused)."""
        import transformers

        base = TINY if self.refused is None else {}
        settings = {**base, **self.settings}
        settings = {k: v for k, v in settings.items() if v is not DROP}
        return getattr(transformers, self.config_cls)(**settings)


_LLAMA3 = _rope(
    "llama3",
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=64,
)
_YARN = _rope("yarn", factor=4.0, original_max_position_embeddings=64)

EXACT = (
    Family("Llama (default RoPE)", "Llama 2, Llama 3.0, SmolLM2", "LlamaConfig"),
    Family(
        "Llama 3.x (rope_type llama3)",
        "Llama 3.1/3.2/3.3",
        "LlamaConfig",
        _LLAMA3,
    ),
    Family(
        "Llama linear scaling (rope_type linear)",
        "Vicuna-16k, LongChat",
        "LlamaConfig",
        _rope("linear", factor=4.0),
    ),
    Family(
        "Llama YaRN (rope_type yarn, attention factor)",
        "Yarn-Llama-2, Qwen2.5 with YaRN",
        "LlamaConfig",
        _YARN,
    ),
    Family(
        "Mistral (sliding_window null)",
        "Mistral-7B v0.2/v0.3, Ministral",
        "MistralConfig",
        {"sliding_window": None},
    ),
    Family(
        "Qwen2 (q/k/v bias)",
        "Qwen2, Qwen2.5",
        "Qwen2Config",
        # As Qwen2.5 checkpoints ship it: a window that is switched off.
        {"use_sliding_window": False, "sliding_window": 131072},
    ),
    Family("Qwen3 (q/k RMSNorm)", "Qwen3 dense", "Qwen3Config"),
    Family(
        "Phi-3 (partial rotary 0.5, fused qkv)",
        "Phi-3/3.5/4-mini (short context)",
        "Phi3Config",
        {**_rope(partial_rotary_factor=0.5), "pad_token_id": 0},
    ),
    Family(
        "StableLM (partial rotary 0.25, q/k/v bias)",
        "StableLM-2, StableLM-3B-4E1T",
        "StableLmConfig",
        {**_rope(partial_rotary_factor=0.25), "use_qkv_bias": True},
    ),
    Family(
        "Falcon (parallel attention + MLP, multi-query)",
        "Falcon-7B/40B, Falcon 2",
        "FalconConfig",
        {
            "parallel_attn": True,
            "multi_query": True,
            "num_kv_heads": 1,
            "alibi": False,
            "new_decoder_architecture": False,
            "head_dim": DROP,  # a property of FalconConfig
        },
    ),
    Family(
        "Gemma (head_dim 256, scaled embeddings)",
        "Gemma 1, CodeGemma",
        "GemmaConfig",
        {"head_dim": 256, "tie_word_embeddings": True},
    ),
)

REFUSED = (
    Family(
        "Mistral v0.1 (sliding_window set)",
        "Mistral-7B v0.1",
        "MistralConfig",
        {"sliding_window": 4096},
        refused="sliding-window attention",
    ),
    Family(
        "Gemma 2 (local/global layers)",
        "Gemma 2",
        "Gemma2Config",
        refused="sliding-window attention",
    ),
    Family(
        "Gemma 3 (local/global layers)",
        "Gemma 3 (text)",
        "Gemma3TextConfig",
        refused="hybrid models",
    ),
    Family(
        "gpt-oss (sliding layers, learned sinks)",
        "gpt-oss-20b/120b",
        "GptOssConfig",
        refused="sliding-window attention",
    ),
    Family(
        "Llama dynamic NTK (rope_type dynamic)",
        "dynamic-NTK fine-tunes",
        "LlamaConfig",
        _rope("dynamic", factor=2.0),
        refused="position-nonlinear RoPE (rope_type='dynamic')",
    ),
    Family(
        "Phi-3 LongRoPE (rope_type longrope)",
        "Phi-3/3.5-mini-128k",
        "Phi3Config",
        {
            **_rope(
                "longrope",
                short_factor=[1.0] * 48,
                long_factor=[2.0] * 48,
                original_max_position_embeddings=4096,
            ),
            "max_position_embeddings": 131072,
            "pad_token_id": 0,
        },
        refused="position-nonlinear RoPE (rope_type='longrope')",
    ),
    Family(
        "M-RoPE (rope mrope_section)",
        "Qwen2-VL, Qwen2.5-VL, Qwen3-VL text towers",
        "Qwen2Config",
        _rope(mrope_section=[16, 8, 8]),
        refused="multimodal M-RoPE",
    ),
    Family(
        "MPT (ALiBi)",
        "MPT-7B",
        "MptConfig",
        {"attn_config": {"alibi": True}},
        refused="was supported in vLLM until v0.28.0",
        served=False,
    ),
    Family("Bloom (ALiBi)", "BLOOM, BLOOMZ", "BloomConfig", refused="ALiBi"),
    Family(
        "DeepSeek-V2 (MLA)",
        "DeepSeek-V2/V3, Kimi K2",
        "DeepseekV2Config",
        refused="multi-head latent attention (MLA)",
    ),
    Family(
        "GPT-NeoX / Pythia (Transformers backend)",
        "Pythia, GPT-NeoX-20B",
        "GPTNeoXConfig",
        refused="the Transformers modeling backend",
    ),
)

FAMILIES = EXACT + REFUSED
