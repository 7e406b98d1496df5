# SPDX-License-Identifier: Apache-2.0
"""On CUDA the sink policy is refused by name until its GPU path lands."""

from tests.helpers import run_cli


def test_sink_policy_is_refused_on_gpu(tiny_llama):
    result = run_cli(
        "serve",
        str(tiny_llama),
        "--skip-tokenizer-init",
        "--kv-policy",
        "sink",
        "--sink-window",
        "64",
    )
    assert result.returncode != 0
    assert "--kv-policy sink runs on the CPU platform only so far" in (
        result.stderr + result.stdout
    )
