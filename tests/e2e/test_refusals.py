# SPDX-License-Identifier: Apache-2.0
"""What the sink policy cannot run is refused at startup, by name."""

import json

import pytest

from tests.conftest import build_tiny_llama
from tests.e2e.sink_engine import engine_config

pytestmark = pytest.mark.e2e


def _model_with(tmp_path, name, **config):
    return build_tiny_llama(tmp_path / name, **config)


def test_supported_model_passes(tiny_llama):
    config = engine_config(tiny_llama)
    assert config.scheduler_config.scheduler_cls.endswith("StreamingSinkScheduler")


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"sliding_window": 256}, "sliding-window attention"),
        (
            {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
            "position-nonlinear RoPE (rope_type='dynamic')",
        ),
    ],
)
def test_unsupported_models(tmp_path, config, needle):
    model = _model_with(tmp_path, "model", **config)
    from vllm_sink_plugin.config import StreamingSinkConfigError

    with pytest.raises(StreamingSinkConfigError, match="does not support") as err:
        engine_config(model)
    assert needle in str(err.value)


def test_kv_connector_is_refused(tiny_llama):
    from vllm_sink_plugin.config import StreamingSinkConfigError

    connector = json.loads('{"kv_connector": "ExampleConnector", "kv_role": "kv_both"}')
    with pytest.raises(StreamingSinkConfigError, match="KV connectors"):
        engine_config(tiny_llama, kv_transfer_config=connector)


def test_lora_is_refused(tiny_llama):
    from vllm_sink_plugin.config import StreamingSinkConfigError

    with pytest.raises(StreamingSinkConfigError, match=r"LoRA adapters \(--enable"):
        engine_config(tiny_llama, enable_lora=True)


def test_engine_core_rechecks_the_final_geometry(tiny_llama, monkeypatch):
    """``--max-model-len -1`` passes the frontend's check at the model's own
    length (8192), then the engine fits it to the KV memory (224 tokens):
    startup stops there, naming the flag, instead of every request failing."""
    from tests.e2e.sink_engine import in_process_llm
    from vllm_sink_plugin.config import StreamingSinkConfigError

    config = {"kv_policy": "sink", "sink_window": 480}
    # vLLM's CPU platform lets this legacy variable (tests/conftest.py) win
    # over kv_cache_memory_bytes.
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    assert engine_config(tiny_llama, additional_config=config, max_model_len=-1)
    with (
        pytest.raises(StreamingSinkConfigError, match="--sink-window") as err,
        in_process_llm(
            tiny_llama,
            skip_tokenizer_init=True,
            max_model_len=-1,
            kv_cache_memory_bytes=256 << 10,
            additional_config=config,
        ),
    ):
        pass
    assert "max_model_len=224" in str(err.value)
