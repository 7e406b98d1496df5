# SPDX-License-Identifier: Apache-2.0
"""Converting a quantized GGUF file into a plain bf16 Hugging Face model folder.

transformers loads the GGUF (dequantizing every weight), the quantizer and its
``quantization_config`` are dropped, and the model is saved as bf16 safetensors
with its tokenizer. The folder is then checked against the GGUF metadata: RoPE
base, chat template, BOS/EOS tokens. torch, transformers and gguf are imported
inside the functions only, so importing this module stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_sink_plugin.assets.errors import AssetError

TOKENIZER_CLASS = "PreTrainedTokenizerFast"
# Keys transformers records about how a file was loaded, not about the model.
_LOAD_TIME_KEYS = ("_model_name_or_path", "is_local", "local_files_only")


@dataclass(frozen=True)
class GgufFacts:
    """What the converted folder must agree with, read from the GGUF header.

    Attributes:
        rope_theta: ``<arch>.rope.freq_base`` (``arch`` being
            ``general.architecture``: ``llama``, ``qwen2``, ...).
        context_length: ``<arch>.context_length``.
        chat_template: ``tokenizer.chat_template``.
        bos_token_id: ``tokenizer.ggml.bos_token_id``.
        eos_token_id: ``tokenizer.ggml.eos_token_id``.
    """

    rope_theta: float
    context_length: int
    chat_template: str
    bos_token_id: int
    eos_token_id: int


def read_gguf_facts(gguf_file: Path) -> GgufFacts:
    """Reads the header fields the conversion is checked against.

    Raises:
        AssetError: A required field is missing.
    """
    from gguf import GGUFReader

    fields = GGUFReader(gguf_file).fields
    arch = _gguf_value(fields, "general.architecture", gguf_file)
    return GgufFacts(
        rope_theta=float(_gguf_value(fields, f"{arch}.rope.freq_base", gguf_file)),
        context_length=int(_gguf_value(fields, f"{arch}.context_length", gguf_file)),
        chat_template=_gguf_value(fields, "tokenizer.chat_template", gguf_file),
        bos_token_id=int(_gguf_value(fields, "tokenizer.ggml.bos_token_id", gguf_file)),
        eos_token_id=int(_gguf_value(fields, "tokenizer.ggml.eos_token_id", gguf_file)),
    )


def convert_gguf(gguf_file: Path, out: Path) -> None:
    """Writes a bf16 Hugging Face folder (model + tokenizer) for a GGUF file.

    Args:
        gguf_file: The (quantized) GGUF checkpoint.
        out: An existing, empty folder to write into.

    Raises:
        AssetError: The result disagrees with the GGUF header or still carries
            quantization.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    facts = read_gguf_facts(gguf_file)
    location = {
        "pretrained_model_name_or_path": str(gguf_file.parent),
        "gguf_file": gguf_file.name,
        "local_files_only": True,
    }
    model = AutoModelForCausalLM.from_pretrained(
        **location, dtype=torch.bfloat16, **_dequantizing_options()
    )
    _drop_quantization(model)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(**location).save_pretrained(out)
    _patch_json(out / "config.json", {"rope_theta": facts.rope_theta})
    _patch_json(
        out / "tokenizer_config.json",
        {"tokenizer_class": TOKENIZER_CLASS, "model_max_length": facts.context_length},
    )
    verify_hf_folder(out, facts)


def verify_hf_folder(folder: Path, facts: GgufFacts) -> None:
    """Checks a converted folder loads offline and matches the GGUF header.

    Raises:
        AssetError: Naming the first disagreement found.
    """
    from transformers import AutoConfig, AutoTokenizer

    if not list(folder.glob("*.safetensors")):
        raise AssetError(f"{folder} has no safetensors weights.")
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    saved = json.loads((folder / "tokenizer_config.json").read_text())
    checks = {
        "quantization_config": (getattr(config, "quantization_config", None), None),
        "dtype": (str(getattr(config, "dtype", None)), "torch.bfloat16"),
        "rope_theta": (_rope_theta(config), facts.rope_theta),
        "tokenizer_class": (saved.get("tokenizer_class"), TOKENIZER_CLASS),
        "chat_template": (tokenizer.chat_template, facts.chat_template),
        "bos_token_id": (tokenizer.bos_token_id, facts.bos_token_id),
        "eos_token_id": (tokenizer.eos_token_id, facts.eos_token_id),
    }
    for name, (actual, expected) in checks.items():
        if actual != expected:
            raise AssetError(
                f"converted model in {folder}: {name} is {actual!r}, "
                f"expected {expected!r}."
            )


def _gguf_value(fields: Mapping[str, Any], key: str, gguf_file: Path) -> Any:
    """Returns one scalar or string field of a GGUF header."""
    from gguf import GGUFValueType

    field = fields.get(key)
    if field is None:
        raise AssetError(f"{gguf_file} has no GGUF field {key!r}.")
    part = field.parts[field.data[0]]
    if field.types[0] == GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    return part[0].item()


def _dequantizing_options() -> dict[str, Any]:
    """Asks transformers 5 to unpack GGUF weights; 4.x always unpacks them."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _drop_quantization(model: Any) -> None:
    """Removes any GGUF quantizer state and checks every weight is dense bf16."""
    import torch

    vars(model).pop("hf_quantizer", None)
    vars(model.config).pop("quantization_config", None)
    odd = {
        name: parameter.dtype
        for name, parameter in model.named_parameters()
        if type(parameter.data) is not torch.Tensor or parameter.dtype != torch.bfloat16
    }
    if odd:
        raise AssetError(f"GGUF weights were not dequantized to bf16: {odd}")


def _rope_theta(config: Any) -> float | None:
    """Returns the RoPE base from a transformers 5 or 4.x config."""
    parameters = getattr(config, "rope_parameters", None) or {}
    return parameters.get("rope_theta", getattr(config, "rope_theta", None))


def _patch_json(path: Path, updates: dict[str, Any]) -> None:
    """Applies ``updates`` to a JSON file and drops load-time bookkeeping keys."""
    data = json.loads(path.read_text())
    for key in _LOAD_TIME_KEYS:
        data.pop(key, None)
    data.update(updates)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
