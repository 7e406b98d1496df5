# SPDX-License-Identifier: Apache-2.0
"""Every refused family of the support matrix is refused at config time, by name."""

import pytest

from tests.e2e.sink_engine import engine_config
from tests.models.build import build_family
from tests.models.families import REFUSED

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("family", REFUSED, ids=lambda f: f.id)
def test_refused_at_startup_with_the_reason(family, tmp_path):
    from vllm_sink_plugin.config import StreamingSinkConfigError

    model = build_family(family, tmp_path / family.id)
    expected = StreamingSinkConfigError if family.served else ValueError
    with pytest.raises(expected) as err:
        engine_config(model)
    if family.served:
        assert "--kv-policy sink does not support" in str(err.value)
    assert family.refused in str(err.value)
