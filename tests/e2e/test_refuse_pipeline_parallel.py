# SPDX-License-Identifier: Apache-2.0
"""Pipeline parallelism is refused at startup, by name (issue 7)."""

import pytest

from tests.e2e.sink_engine import engine_config

pytestmark = pytest.mark.e2e


def test_pipeline_parallel_is_refused(tiny_llama):
    from vllm_sink_plugin.config import StreamingSinkConfigError

    with pytest.raises(StreamingSinkConfigError) as err:
        engine_config(tiny_llama, pipeline_parallel_size=2)
    assert str(err.value) == (
        "--kv-policy sink does not support: pipeline parallelism "
        "(--pipeline-parallel-size 2), not yet; use --tensor-parallel-size"
    )


def test_tensor_parallel_config_passes(tiny_llama):
    config = engine_config(tiny_llama, tensor_parallel_size=2)
    assert config.parallel_config.world_size == 2
    assert config.scheduler_config.scheduler_cls.endswith("StreamingSinkScheduler")
