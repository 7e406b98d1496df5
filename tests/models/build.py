# SPDX-License-Identifier: Apache-2.0
"""Builds a family's tiny checkpoint locally: random weights, no hub access."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import save_peaked
from tests.models.families import Family


def build_family(family: Family, path: Path, *, seed: int = 0) -> Path:
    """Saves ``family``'s tiny model (config only when the family is refused).

    Refusals happen at config time, before any weight is read, so a refused
    family needs no weights (some, like MLA or M-RoPE models, would need
    many more modules than a tiny test can afford).
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = family.config()
    if family.refused is not None:
        if not config.architectures:  # what from_config + save would write
            from transformers.models.auto.modeling_auto import (
                MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            )

            config.architectures = [
                MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]
            ]
        config.save_pretrained(path)
        return path
    torch.manual_seed(seed)
    return save_peaked(AutoModelForCausalLM.from_config(config), path)
