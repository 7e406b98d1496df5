# SPDX-License-Identifier: Apache-2.0
"""register() runs inside every process of a real LLM(...) engine."""

import json
import os

import pytest

from tests.helpers import CPU_ENGINE_KWARGS

pytestmark = pytest.mark.e2e


def test_register_runs_in_engine_core_and_worker(tiny_llama, tmp_path, monkeypatch):
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("VLLM_SINK_TRACE_FILE", str(trace))
    from vllm import LLM, SamplingParams

    llm = LLM(
        str(tiny_llama),
        skip_tokenizer_init=True,
        max_model_len=512,
        additional_config={"kv_policy": "sink", "sink_window": 128},
        **CPU_ENGINE_KWARGS,
    )
    try:
        out = llm.generate(
            [{"prompt_token_ids": [1, 5, 6, 7]}],
            SamplingParams(max_tokens=4, ignore_eos=True),
        )
        assert len(out[0].outputs[0].token_ids) == 4
        config = llm.llm_engine.vllm_config.additional_config
        assert config["kv_policy"] == "sink"
    finally:
        llm.llm_engine.engine_core.shutdown()
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    by_name = {r["mp_name"]: r["pid"] for r in records if r["event"] == "register"}
    workers = [n for n in by_name if n.startswith("VllmWorker")]
    assert "EngineCore" in by_name and workers, records
    # Other processes than this one (where register() ran long before, when
    # the first EngineArgs of the session loaded the plugins).
    pids = {by_name["EngineCore"], by_name[workers[0]], os.getpid()}
    assert len(pids) == 3, records
