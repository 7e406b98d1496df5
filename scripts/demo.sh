#!/usr/bin/env bash
# The main job on a fresh machine: set up (a no-op when done), then serve the
# embedded SmolLM2 with --kv-policy sink and stream a generation past its
# max_model_len, printing tokens/s and KV cache occupancy.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m vllm_sink_plugin.demo "$@"
