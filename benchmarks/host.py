# SPDX-License-Identifier: Apache-2.0
"""The machine a benchmark ran on, in words (results name it)."""

from __future__ import annotations

import os
import platform
import subprocess


def host_cpu() -> str:
    """``"<CPU model> x <cores this process may use>"``."""
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model} x {len(os.sched_getaffinity(0))}"
