# SPDX-License-Identifier: Apache-2.0
"""``SchedulerStats`` carries the policy's counters from engine core to frontend.

Target:      vllm.v1.metrics.stats.SchedulerStats (a dataclass)
Process:     all (the engine core encodes it, the frontend decodes it)
vLLM:        0.32.0, 0.33.0 (compat.SUPPORTED_VLLM; verified 0.32.0 CPU;
             0.33.0: drift canaries, tests/compat)
Why:         The engine core's only channel for statistics is
             ``SchedulerStats``, sent inside ``EngineCoreOutputs`` with a
             msgspec decoder typed by that dataclass's fields: an attribute
             that is not a field is dropped on the way. Every existing field
             has a stock consumer that would misread our numbers.
How:         Adds one optional dataclass field, ``sink_stats: dict | None``
             (default None), before msgspec first inspects the class (the
             plugin registers before any engine is built). Stock code never
             reads it; ``None`` is what every stock scheduler sends.
Upstream:    none yet: an open ``extra`` dict on SchedulerStats would do.
Remove when: vLLM lets a scheduler attach plugin statistics.
Tests:       tests/unit/test_patches.py, tests/e2e/test_serve_sink.py
"""

from __future__ import annotations

import dataclasses
from typing import Any

FIELD = "sink_stats"


def apply() -> None:
    from vllm.v1.metrics.stats import SchedulerStats

    fields = SchedulerStats.__dataclass_fields__
    if FIELD in fields:
        return
    field = dataclasses.field(default=None)
    field.name = FIELD
    field.type = dict[str, Any] | None
    field._field_type = dataclasses._FIELD  # what @dataclass sets on a field
    fields[FIELD] = field
    SchedulerStats.__annotations__[FIELD] = dict[str, Any] | None
    setattr(SchedulerStats, FIELD, None)
