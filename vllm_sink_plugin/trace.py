# SPDX-License-Identifier: Apache-2.0
"""Opt-in record of where the plugin ran, for tests and debugging.

With ``VLLM_SINK_TRACE_FILE=/path`` set, :func:`record` appends one JSON line
per event: the event, the pid, the parent pid and the process title (vLLM
names its processes, e.g. ``VLLM::EngineCore``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys

ENV = "VLLM_SINK_TRACE_FILE"


def _title() -> str:
    try:
        import setproctitle

        return setproctitle.getproctitle()
    except ImportError:
        return " ".join(sys.argv[:1])


def record(event: str, **fields) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    line = {
        "event": event,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "title": _title(),
        "mp_name": multiprocessing.current_process().name,
        **fields,
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
