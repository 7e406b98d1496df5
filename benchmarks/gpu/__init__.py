# SPDX-License-Identifier: Apache-2.0
"""The GPU benchmark harness behind ``python -m benchmarks.gpu_bench``.

======================  ==================================================
``plan.py``             sizes per scale, engines, tasks, time estimates
``models.py``           config.json-only model folders (dummy weights)
``engine.py``           engine settings; the step loop (``Runner``)
``workloads.py``        P1-P5 and the soak, run inside an engine's child
``child.py``            an engine's child process: engine, then its tasks
``report.py``           summary.json, summary.md and the plots
======================  ==================================================
"""
