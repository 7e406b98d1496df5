# SPDX-License-Identifier: Apache-2.0
"""No error growth in bf16 (its own module: one in-process engine at a time)."""

import pytest

from tests.e2e.conftest import (
    MAX_MODEL_LEN,
    SINKS,
    WINDOW,
    no_growth,
    prompt_logprob_errors,
)
from tests.e2e.sink_engine import in_process_llm, sink_config

pytestmark = pytest.mark.e2e


def test_no_error_growth_in_bf16(tiny_llama, reference_prompt_logprobs):
    with in_process_llm(
        tiny_llama,
        skip_tokenizer_init=True,
        dtype="bfloat16",
        max_model_len=MAX_MODEL_LEN,
        additional_config=sink_config(SINKS, WINDOW),
    ) as (llm, _):
        errors = prompt_logprob_errors(llm, reference_prompt_logprobs)
    early, late = no_growth(errors, slack=2.0)
    print(f"MEASURED tiny bf16 max err tokens 10-20%={early:.3g} last 10%={late:.3g}")
    assert early < 0.5, early  # bf16 vs fp32 reference, not garbage
