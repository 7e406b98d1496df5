# SPDX-License-Identifier: Apache-2.0
"""The one table of supported rotary classes, as both RoPE paths read it."""

import copy
import importlib

import pytest
import torch

from tests.helpers import ROPES, build_rope
from vllm_sink_plugin.attention.offset_rope import rope_frequencies
from vllm_sink_plugin.attention.rope import QueryOnlyRotary, install_query_only_rope
from vllm_sink_plugin.attention.rope_classes import (
    SUPPORTED_ROPE,
    qualname,
    rope_class,
    supported_names,
)


@pytest.mark.parametrize("key", sorted(SUPPORTED_ROPE))
def test_every_key_names_the_vllm_class_it_matches(key):
    module, _, name = key.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert f"{cls.__module__}.{cls.__qualname__}" == key
    assert SUPPORTED_ROPE[key].name == name


@pytest.mark.parametrize("name", sorted(ROPES))
def test_get_rope_classes_are_in_the_table(name):
    rotary = build_rope(name)
    assert rope_class(rotary) is SUPPORTED_ROPE[qualname(rotary)]
    freqs = rope_frequencies(rotary)
    assert freqs.dtype == torch.float64 and freqs.shape == (32,)


def test_a_subclass_is_refused_by_both_paths():
    rotary = copy.copy(build_rope("default"))  # get_rope caches: never edit its object
    rotary.__class__ = type("RotaryEmbedding", (type(rotary),), {})
    assert rope_class(rotary) is None
    assert rope_class(None) is None
    with pytest.raises(ValueError, match="RotaryEmbedding is not one") as error:
        rope_frequencies(rotary)
    assert "(supported: " + ", ".join(supported_names()) + ")" in str(error.value)
    assert supported_names() == [
        "LinearScalingRotaryEmbedding",
        "Llama3RotaryEmbedding",
        "NTKScalingRotaryEmbedding",
        "RotaryEmbedding",
        "YaRNScalingRotaryEmbedding",
    ]


def _model(rotary):
    """A model with one block holding ``attn`` (a vLLM ``Attention``) and
    ``rotary_emb``; the attention object is never initialised."""
    import types

    from torch import nn
    from vllm.model_executor.layers.attention import Attention

    attn = Attention.__new__(Attention)
    nn.Module.__init__(attn)
    attn.impl = types.SimpleNamespace()
    block = nn.Module()
    block.attn = attn
    block.rotary_emb = rotary
    model = nn.Module()
    model.layer = block
    return model


def test_raw_keys_path_reads_the_same_table():
    rotary = build_rope("llama3")
    model = _model(rotary)
    assert install_query_only_rope(model) == 1
    assert isinstance(model.layer.rotary_emb, QueryOnlyRotary)
    assert model.layer.attn.impl.sink_rotary is rotary

    refused = copy.copy(build_rope("default"))
    refused.__class__ = type("RotaryEmbedding", (type(refused),), {})
    with pytest.raises(ValueError, match=f"layer has {qualname(refused)}"):
        install_query_only_rope(_model(refused))
    with pytest.raises(ValueError, match="layer has no rotary_emb"):
        install_query_only_rope(_model(None))
