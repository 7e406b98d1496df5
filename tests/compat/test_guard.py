# SPDX-License-Identifier: Apache-2.0
"""register()'s version guard, in fresh processes (it is process-global).

Each case runs a short script in a subprocess, after faking what vLLM
reports (``vllm.__version__``) or breaking one patch, and prints a JSON
result line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import CPU_ENGINE_KWARGS
from vllm_sink_plugin import compat

SUPPORTED = ", ".join(compat.SUPPORTED_VLLM)
FAKE = "0.99.0"

# Loads the plugins as vLLM does (entry point), then reports what happened.
PRELUDE = """
import json, os, sys
import vllm
FAKE = os.environ.get("FAKE_VLLM_VERSION")
if FAKE:
    vllm.__version__ = FAKE
BREAK = os.environ.get("BREAK_PATCH")
if BREAK:
    import importlib
    module = importlib.import_module("vllm_sink_plugin.patches." + BREAK)
    def broken(*args, **kwargs):
        raise ImportError("cannot import name 'GPUModelRunner' (faked)")
    module.apply = broken
from vllm.plugins import load_general_plugins
load_general_plugins()
import vllm_sink_plugin
from vllm_sink_plugin.patches import _base
from vllm.engine.arg_utils import EngineArgs

MODEL = sys.argv[1]
result = {
    "registered": vllm_sink_plugin._registered,
    "reason": vllm_sink_plugin.disabled_reason(),
    "wrapped": sorted(
        f"{getattr(o, '__qualname__', o.__name__)}.{n}" for o, n in _base.installed()
    ),
}

def error_of(build):
    try:
        build()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None

def config(**kwargs):
    return EngineArgs(
        model=MODEL, skip_tokenizer_init=True, max_model_len=256, **kwargs
    ).create_engine_config()
"""

STOCK_CHECKS = """
from vllm.v1.engine.input_processor import InputProcessor
from vllm.v1.metrics.stats import SchedulerStats
from vllm.v1.worker.gpu_model_runner import GPUModelRunner
from vllm.v1.attention.backends.registry import AttentionBackendEnum
from vllm.utils.argparse_utils import FlexibleArgumentParser

result["stock"] = {
    "process_inputs": _base.original_of(InputProcessor.process_inputs) is None,
    "update_states": _base.original_of(GPUModelRunner._update_states) is None,
    "cpu_attn": AttentionBackendEnum.CPU_ATTN.get_path(),
    "sink_stats": "sink_stats" in SchedulerStats.__dataclass_fields__,
}
result["sink"] = error_of(lambda: config(additional_config={"kv_policy": "sink"}))
parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
args = parser.parse_args(["--model", MODEL, "--kv-policy", "sink"])
result["flag"] = error_of(
    lambda: EngineArgs.from_cli_args(args).create_engine_config()
)
result["none"] = error_of(lambda: config(additional_config={"kv_policy": "none"}))
result["plain"] = error_of(lambda: config())
"""


def run(script: str, model, **env) -> tuple[dict, str]:
    """Runs PRELUDE + ``script``; returns its result and its other output."""
    code = PRELUDE + textwrap.dedent(script) + "\nprint('RESULT', json.dumps(result))"
    environ = {**os.environ, **env}
    environ.pop(compat.ALLOW_ENV, None)
    environ.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(model)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = (proc.stdout + proc.stderr).splitlines()
    (line,) = [x for x in lines if x.startswith("RESULT ")]
    logs = "\n".join(x for x in lines if not x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")), logs


REFUSAL_WRAPS = [
    "EngineArgs.add_cli_args",
    "EngineArgs.create_engine_config",
    "EngineArgs.from_cli_args",
]


def test_unsupported_vllm_is_left_stock_and_refuses_sink_by_name(tiny_llama):
    result, output = run(STOCK_CHECKS, tiny_llama, FAKE_VLLM_VERSION=FAKE + "+cpu")
    assert not result["registered"]
    assert FAKE in result["reason"] and SUPPORTED in result["reason"]
    # Only the refusal is installed: no runtime patch, no attention backend.
    assert result["wrapped"] == REFUSAL_WRAPS
    stock = result["stock"]
    assert stock["process_inputs"] and stock["update_states"]
    assert stock["cpu_attn"].startswith("vllm.v1.attention.backends.cpu_attn")
    assert not stock["sink_stats"]
    for way in ("sink", "flag"):  # additional_config, then --kv-policy sink
        error = result[way]
        assert error.startswith("StreamingSinkConfigError: --kv-policy sink")
        assert f"installed {FAKE}" in error and SUPPORTED in error
        assert compat.ALLOW_ENV in error
    assert result["none"] is None and result["plain"] is None
    # One warning, naming both versions.
    assert output.count(f"supports vLLM {SUPPORTED}; installed {FAKE}") == 1


def test_the_override_patches_an_unsupported_vllm(tiny_llama):
    script = """
    from vllm.v1.engine.input_processor import InputProcessor
    result["patched"] = _base.original_of(InputProcessor.process_inputs) is not None
    """
    result, output = run(
        script, tiny_llama, FAKE_VLLM_VERSION=FAKE, **{compat.ALLOW_ENV: "1"}
    )
    assert result["registered"] and result["reason"] is None
    assert result["patched"] and len(result["wrapped"]) > len(REFUSAL_WRAPS)
    assert f"vLLM {FAKE} is untested" in output and compat.ALLOW_ENV in output


def test_a_patch_that_fails_leaves_vllm_stock(tiny_llama):
    result, output = run(
        STOCK_CHECKS, tiny_llama, BREAK_PATCH="worker.patch_model_runner_v2"
    )
    assert not result["registered"]
    reason = result["reason"]
    assert "could not patch worker.patch_model_runner_v2" in reason
    assert "ImportError" in reason
    # The patches applied before it are undone; only the refusal remains.
    assert result["wrapped"] == REFUSAL_WRAPS
    stock = result["stock"]
    assert stock["process_inputs"] and stock["update_states"]
    assert stock["cpu_attn"].startswith("vllm.v1.attention.backends.cpu_attn")
    for way in ("sink", "flag"):
        assert "could not patch worker.patch_model_runner_v2" in result[way]
    assert result["none"] is None and result["plain"] is None
    assert output.count("vllm-sink-plugin disabled: could not patch") == 1


@pytest.mark.e2e
def test_stock_vllm_runs_when_a_patch_fails(tiny_llama):
    """register() does not raise and a stock engine generates."""
    script = f"""
    from vllm import LLM, SamplingParams
    llm = LLM(MODEL, skip_tokenizer_init=True, max_model_len=256,
              **{CPU_ENGINE_KWARGS!r})
    out = llm.generate([{{"prompt_token_ids": [1, 5, 6, 7]}}],
                       SamplingParams(max_tokens=4, ignore_eos=True))
    result["tokens"] = len(out[0].outputs[0].token_ids)
    llm.llm_engine.engine_core.shutdown()
    """
    result, _ = run(
        script,
        tiny_llama,
        BREAK_PATCH="frontend.patch_input_processor",
        VLLM_ENABLE_V1_MULTIPROCESSING="0",  # engine core in this process
    )
    assert "could not patch frontend.patch_input_processor" in result["reason"]
    assert result["tokens"] == 4


@pytest.mark.e2e
def test_vllm_serve_refuses_sink_on_an_unsupported_vllm(tiny_llama):
    """``vllm serve --kv-policy sink`` stops at startup, naming the versions."""
    code = textwrap.dedent(
        f"""
        import sys
        import vllm
        vllm.__version__ = {FAKE!r}
        from vllm_sink_plugin.cli import main
        sys.argv = ["vllm", "serve", {str(tiny_llama)!r}, "--kv-policy", "sink",
                    "--max-model-len", "256", "--port", "1"]
        main()
        """
    )
    environ = {k: v for k, v in os.environ.items() if k != compat.ALLOW_ENV}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "--kv-policy sink (additional_config['kv_policy']) is refused" in output
    assert f"installed {FAKE}" in output and SUPPORTED in output
