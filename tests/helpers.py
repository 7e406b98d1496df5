# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the end-to-end tests (real vLLM engines on CPU)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# What every CPU test engine gets: small KV pool, eager mode, fp32.
CPU_ENGINE_KWARGS = dict(
    enforce_eager=True,
    dtype="float32",
    kv_cache_memory_bytes=128 << 20,
    block_size=32,
    seed=0,
)

VLLM_CLI = [sys.executable, "-m", "vllm_sink_plugin.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*VLLM_CLI, *args], capture_output=True, text=True, timeout=timeout
    )


class Server:
    """A real ``vllm serve`` subprocess on localhost, stopped on exit."""

    def __init__(self, model: Path, *args: str, log: Path, timeout: float = 600):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [
            *VLLM_CLI,
            "serve",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *args,
        ]
        self._log_file = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "VLLM_LOGGING_LEVEL": "INFO"},
        )
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                time.sleep(1)
        self.close()
        raise TimeoutError(f"server not healthy:\n{self.log.read_text()[-4000:]}")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as r:
            return r.read().decode()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log_file.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# rope_parameters of each RoPE type the plugin supports (vLLM's get_rope).
ROPES = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
    "ntk": {"rope_type": "ntk", "rope_theta": 10000.0, "factor": 2.0},
    "llama3": {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "yarn": {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 2048,
    },
}


def build_rope(name: str, neox: bool = True, max_position: int = 8192):
    """vLLM's fp32 rotary embedding of ``ROPES[name]`` (head size 64)."""
    import torch
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.rotary_embedding import get_rope

    with set_current_vllm_config(VllmConfig()):
        return get_rope(
            64,
            max_position,
            is_neox_style=neox,
            rope_parameters=ROPES[name],
            dtype=torch.float32,
        )
