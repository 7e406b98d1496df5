# SPDX-License-Identifier: Apache-2.0
"""summary.json, summary.md and the plots, from the raw results alone.

``python -m benchmarks.gpu_bench --replot DIR`` rebuilds all three from
``DIR/raw.json`` (e.g. where the GPU machine had no matplotlib).
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.gpu.plan import REPEATED
from benchmarks.repeats import keyed_spread

KEYS = (
    "gpu",
    "vllm",
    "p1_no_eviction_ratio",
    "p2_streaming_ratio",
    "p2_flatness_last_vs_first",
    "p3_vs_dense_64k_ratio",
    "p4_vs_recompute_per_token_ratio",
    "p4_vs_half_window_restart_ratio",
    "p5_plugin_kernel_share",
    "kv_blocks_per_stream_max",
    "command",
)

# key -> (goal, comparison, target)
GOALS = {
    "p1_no_eviction_ratio": ("P1 no-eviction overhead", ">=", 0.98),
    "p2_streaming_ratio": ("P2 steady streaming vs 4k-context decode", ">=", 0.95),
    "p2_flatness_last_vs_first": ("P2 flatness, last vs first 10%", ">=", 0.95),
    "p3_vs_dense_64k_ratio": ("P3 vs dense long context", ">=", 8.0),
    "p4_vs_recompute_per_token_ratio": ("P4 vs re-computation, per token", ">=", 22.2),
    "p4_vs_half_window_restart_ratio": ("P4 vs half-window restarts", ">=", 1.5),
    "p5_plugin_kernel_share": ("P5 plugin kernels, share of GPU time", "<=", 0.02),
}


def _ok(task: dict | None) -> dict:
    """A task's result, or ``{}`` when it did not run or failed."""
    return task if task and "error" not in task else {}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a and b else None


def repeated_ratios(raw: dict, key: str) -> list[float]:
    """``key``'s plugin/baseline ratio in each repetition that measured both."""
    plugin, baseline, plugin_rate, baseline_rate = REPEATED[key]
    reps = raw.get("reps", {})
    pairs = zip(reps.get(plugin, []), reps.get(baseline, []), strict=False)
    runs = [
        _ratio(_ok(p).get(plugin_rate), _ok(b).get(baseline_rate)) for p, b in pairs
    ]
    return [r for r in runs if r is not None]


def _spread(summary: dict, raw: dict) -> None:
    """Each repeated ratio becomes the median, with ``_min/_max/_runs``."""
    for key in REPEATED:
        runs = repeated_ratios(raw, key)
        if not runs and summary[key] is not None:
            runs = [summary[key]]  # an older raw.json: one measurement
        summary.update(keyed_spread(key, runs))


def _batch(task: dict, batch: str) -> dict:
    return task.get("batches", {}).get(batch, {})


def summarize(raw: dict) -> dict:
    """The summary keys (null where a workload did not run) and the sizes."""
    t = {name: _ok(result) for name, result in raw["tasks"].items()}
    p1p, p1b = t.get("p1_plugin", {}), t.get("p1_baseline", {})
    p2p, p2b = t.get("p2_plugin", {}), t.get("p2_baseline", {})
    long, dense = t.get("p2_long", {}), t.get("p3_dense", {})
    p4p, p4r = t.get("p4_plugin", {}), t.get("p4_recompute", {})
    restart, p5 = t.get("p4_restart", {}), t.get("p5_profile", {})
    soak = t.get("soak", {})
    batches = raw["meta"]["sizes"]["p4_batches"]
    first = str(batches[0])
    per_token = {
        str(b): {
            "plugin_tok_s": _batch(p4p, str(b)).get("tok_s"),
            "recompute_tok_s": _batch(p4r, str(b)).get("tok_s"),
            "ratio": _ratio(
                _batch(p4p, str(b)).get("tok_s"), _batch(p4r, str(b)).get("tok_s")
            ),
            "recompute_steps": _batch(p4r, str(b)).get("steps"),
        }
        for b in batches
    }
    plugin_rate = p2p.get("tok_s")
    sz = raw["meta"]["sizes"]  # planned sizes, where a workload did not run
    summary = {
        "gpu": raw["meta"].get("gpu"),
        "vllm": raw["meta"].get("vllm"),
        "p1_no_eviction_ratio": _ratio(p1p.get("tok_s"), p1b.get("tok_s")),
        "p2_streaming_ratio": _ratio(plugin_rate, p2b.get("decode_tok_s")),
        "p2_flatness_last_vs_first": long.get("last_vs_first"),
        "p3_vs_dense_64k_ratio": _ratio(plugin_rate, dense.get("decode_tok_s")),
        "p4_vs_recompute_per_token_ratio": per_token[first]["ratio"],
        "p4_vs_half_window_restart_ratio": _ratio(plugin_rate, restart.get("tok_s")),
        "p5_plugin_kernel_share": p5.get("share"),
        "kv_blocks_per_stream_max": p2p.get("kv_blocks_per_stream_max"),
        "command": raw["meta"]["command"],
        "scale": raw["meta"]["scale"],
        "device": raw["meta"]["device"],
        "host_cpu": raw["meta"].get("host_cpu"),
    }
    _spread(summary, raw)
    summary["workloads"] = {
        "p1": {
            "requests": p1p.get("requests", sz["p1_requests"]),
            "prompt": p1p.get("prompt", sz["p1_prompt"]),
            "output": p1p.get("output", sz["p1_output"]),
            "plugin_tok_s": p1p.get("tok_s"),
            "baseline_tok_s": p1b.get("tok_s"),
        },
        "p2": {
            "streams": p2p.get("streams", sz["p2_streams"]),
            "prompt": p2p.get("prompt", sz["p2_prompt"]),
            "tokens_per_stream": p2p.get("tokens_per_stream", sz["p2_tokens"]),
            "cache": f"{sz['num_sink_tokens']} + {sz['sink_window']}",
            "cache_slots": p2p.get("cache_slots"),
            "plugin_steady_tok_s": plugin_rate,
            "plugin_overall_tok_s": p2p.get("overall_tok_s"),
            "baseline_streams": p2b.get("streams", sz["p2_streams"]),
            "baseline_context": p2b.get(
                "context",
                [sz["p2_base_prompt"], sz["p2_base_prompt"] + sz["p2_base_output"]],
            ),
            "baseline_decode_tok_s": p2b.get("decode_tok_s"),
        },
        "p2_flatness": {
            "tokens": long.get("tokens", sz["long_tokens"]),
            "filled_at_tokens": long.get("filled_at_tokens"),
            "first_10pct_tok_s": long.get("first_10pct_tok_s"),
            "last_10pct_tok_s": long.get("last_10pct_tok_s"),
        },
        "p3": {
            "context": dense.get("context", sz["p3_context"]),
            "dense_streams": dense.get("streams"),
            "dense_decode_tok_s": dense.get("decode_tok_s"),
            "plugin_streams": p2p.get("streams", sz["p2_streams"]),
            "plugin_tok_s": plugin_rate,
        },
        "p4": {
            "model": sz["model_7b"],
            "window": p4r.get("window", sz["num_sink_tokens"] + sz["sink_window"]),
            "per_token": per_token,
            "half_window": {
                "streams": restart.get("streams", sz["p2_streams"]),
                "tokens_per_stream": restart.get("tokens_per_stream", sz["p2_tokens"]),
                "restart_prompt": restart.get("restart_prompt"),
                "prefills": restart.get("prefills"),
                "restart_tok_s": restart.get("tok_s"),
                "plugin_tok_s": plugin_rate,
            },
        },
        "p5": {
            "streams": p5.get("streams", sz["p2_streams"]),
            "steps": p5.get("steps", sz["p5_steps"]),
            "share": p5.get("share"),
            "basis": p5.get("basis"),
            "ranges": p5.get("ranges"),
        },
        "soak": {
            key: soak.get(key)
            for key in (
                "seconds",
                "streams",
                "tok_s",
                "errors",
                "blocks_leaked",
                "long_stream_tokens",
            )
        },
    }
    return summary


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _passes(value, comparison: str, target: float) -> str:
    if value is None:
        return "—"
    ok = value >= target if comparison == ">=" else value <= target
    return "yes" if ok else "**no**"


def _spread_text(summary: dict, key: str, comparison: str, target: float) -> str:
    """`` (median of 3: 0.97-0.99; the spread straddles the goal)`` or ``""``."""
    runs = summary.get(f"{key}_runs") or []
    if len(runs) < 2:
        return ""
    low, high = summary[f"{key}_min"], summary[f"{key}_max"]
    text = f" (median of {len(runs)}: {_fmt(low, 4)}–{_fmt(high, 4)}"
    meets = [r >= target if comparison == ">=" else r <= target for r in runs]
    if any(meets) and not all(meets):
        text += "; the spread straddles the goal"
    return text + ")"


def markdown(raw: dict, summary: dict) -> str:
    """summary.md: the goals table, sizes, engines, soak and errors."""
    meta, w = raw["meta"], summary["workloads"]
    p4 = w["p4"]
    first = str(meta["sizes"]["p4_batches"][0])
    sides = {
        "p1_no_eviction_ratio": (
            f"{_fmt(w['p1']['plugin_tok_s'])} tok/s",
            f"{_fmt(w['p1']['baseline_tok_s'])} tok/s",
            f"{w['p1']['requests']} requests, {w['p1']['prompt']} prompt / "
            f"{w['p1']['output']} output",
        ),
        "p2_streaming_ratio": (
            f"{_fmt(w['p2']['plugin_steady_tok_s'])} tok/s steady",
            f"{_fmt(w['p2']['baseline_decode_tok_s'])} tok/s decode",
            f"{w['p2']['streams']} streams x {_fmt(w['p2']['tokens_per_stream'])} "
            f"tokens, cache {w['p2']['cache']}; baseline context "
            f"{w['p2']['baseline_context']}",
        ),
        "p2_flatness_last_vs_first": (
            f"first {_fmt(w['p2_flatness']['first_10pct_tok_s'])}, last "
            f"{_fmt(w['p2_flatness']['last_10pct_tok_s'])} tok/s",
            "—",
            f"1 stream x {_fmt(w['p2_flatness']['tokens'])} tokens",
        ),
        "p3_vs_dense_64k_ratio": (
            f"{_fmt(w['p3']['plugin_tok_s'])} tok/s ({w['p3']['plugin_streams']} "
            "streams)",
            f"{_fmt(w['p3']['dense_decode_tok_s'])} tok/s "
            f"({_fmt(w['p3']['dense_streams'])} streams)",
            f"dense context {_fmt(w['p3']['context'])} tokens",
        ),
        "p4_vs_recompute_per_token_ratio": (
            f"{_fmt(p4['per_token'][first]['plugin_tok_s'])} tok/s",
            f"{_fmt(p4['per_token'][first]['recompute_tok_s'])} tok/s",
            f"{p4['model']}, W={p4['window']}, batch {first}, "
            f"{_fmt(p4['per_token'][first]['recompute_steps'])} re-computed tokens",
        ),
        "p4_vs_half_window_restart_ratio": (
            f"{_fmt(p4['half_window']['plugin_tok_s'])} tok/s",
            f"{_fmt(p4['half_window']['restart_tok_s'])} tok/s",
            f"{p4['half_window']['streams']} streams x "
            f"{_fmt(p4['half_window']['tokens_per_stream'])} tokens, restart from "
            f"{_fmt(p4['half_window']['restart_prompt'])} tokens, "
            f"{_fmt(p4['half_window']['prefills'])} prefills",
        ),
        "p5_plugin_kernel_share": (
            f"{_fmt(w['p5']['share'])}",
            "—",
            f"{w['p5']['steps']} decode steps x {w['p5']['streams']} streams; "
            f"{_fmt(w['p5']['basis'])}",
        ),
    }
    lines = [
        f"# vllm-sink-plugin on {summary['gpu']} (vLLM {summary['vllm']})",
        "",
        f"`{summary['command']}`",
        "",
        f"Scale `{meta['scale']}`, device `{meta['device']}`, host CPU "
        f"{meta.get('host_cpu') or 'not recorded'}, "
        f"{meta['wall_s'] / 60:.1f} min in all. Rates are generated tokens per "
        "second of wall time (greedy, `ignore_eos`, dummy weights); the P1 and "
        f"P2 ratios are the median of {meta.get('reps', 1)} repetition(s), the "
        "engines alternating.",
        "",
        *(
            [
                "**Smoke scale: these numbers check the harness, not the plugin** "
                "(tiny model, seconds per workload).",
                "",
            ]
            if meta["scale"] == "smoke"
            else []
        ),
        "| goal | target | measured | pass | plugin | baseline | sizes |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, (goal, comparison, target) in GOALS.items():
        plugin, baseline, sizes = sides[key]
        value = summary[key]
        measured = _fmt(value, 4) + _spread_text(summary, key, comparison, target)
        lines.append(
            f"| {goal} (`{key}`) | {comparison} {target:g} | {measured} | "
            f"{_passes(value, comparison, target)} | {plugin} | {baseline} | "
            f"{sizes} |"
        )
    lines += [
        "",
        f"KV blocks held by one P2 stream at most: "
        f"{_fmt(summary['kv_blocks_per_stream_max'])} (block size "
        f"{meta.get('block_size')}).",
        "",
        "## P4 per token, every batch size",
        "",
        "| batch | plugin tok/s | re-computation tok/s | ratio |",
        "|---|---|---|---|",
    ]
    for batch, row in p4["per_token"].items():
        lines.append(
            f"| {batch} | {_fmt(row['plugin_tok_s'])} | "
            f"{_fmt(row['recompute_tok_s'])} | {_fmt(row['ratio'], 4)} |"
        )
    lines += ["", "## Soak", ""]
    soak = _ok(raw["tasks"].get("soak"))
    if soak:
        lines += [
            f"- {soak['wall_s']} s: the long stream ({_fmt(soak['long_stream_tokens'])}"
            f" tokens) and {soak['streams']} streams of "
            f"{_fmt(soak['stream_tokens'])} tokens, renewed as they finished: "
            f"{_fmt(soak['generated'])} tokens, {_fmt(soak['tok_s'])} tok/s.",
            f"- errors: {soak['errors']} (finish reasons {soak['finish_reasons']});"
            f" KV blocks leaked after aborting the rest: {soak['blocks_leaked']}; "
            f"preemptions: {soak['preemptions']}.",
            f"- memory used (MiB): first {_fmt(soak['used_mib_first'])}, last "
            f"{_fmt(soak['used_mib_last'])}, max {_fmt(soak['used_mib_max'])}; "
            f"KV blocks in use at most {_fmt(soak['kv_blocks_max'])}.",
        ]
    else:
        error = (raw["tasks"].get("soak") or {}).get("error")
        lines.append("Did not run." if error is None else "Failed (see below).")
    lines += [
        "",
        "## Engines",
        "",
        "| engine | model | policy | max_model_len | KV blocks | async sched. | "
        "batched tokens | start s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, info in raw["engines"].items():
        policy = info.get("additional_config", {}).get("kv_policy", "stock")
        if "error" in info and "model" not in info:
            lines.append(f"| {name} | — | failed to start | | | | | |")
            continue
        lines.append(
            f"| {name} | {info.get('model')} | {policy} | "
            f"{_fmt(info.get('max_model_len'))} | {_fmt(info.get('num_kv_blocks'))} | "
            f"{info.get('async_scheduling')} | "
            f"{_fmt(info.get('max_num_batched_tokens'))} | "
            f"{info.get('start_seconds')} |"
        )
    errors = {k: v["error"] for k, v in raw["tasks"].items() if v and "error" in v}
    errors.update(raw.get("errors", {}))
    if errors:
        lines += ["", "## Errors", ""]
        for name, error in errors.items():
            last = error.strip().splitlines()[-1] if error.strip() else ""
            lines.append(f"- `{name}`: {last}")
        lines.append("\nFull tracebacks are in raw.json.")
    return "\n".join(lines) + "\n"


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def plots(raw: dict, out: Path) -> list[str]:
    """The PNGs; returns their names.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = {name: _ok(result) for name, result in raw["tasks"].items()}
    p2p, long = tasks.get("p2_plugin", {}), tasks.get("p2_long", {})
    p2b, restart = tasks.get("p2_baseline", {}), tasks.get("p4_restart", {})
    device = raw["meta"].get("gpu")
    written = []

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 8))
    if p2p.get("curve"):
        x, y = zip(*p2p["curve"], strict=True)
        top.plot(x, y, label=f"plugin, {p2p['streams']} streams")
        full = p2p["cache_slots"] - p2p["prompt"]
        top.axvline(full, color="gray", ls=":", label="cache full")
    if p2b.get("decode_tok_s"):
        top.axhline(
            p2b["decode_tok_s"],
            color="C1",
            ls="--",
            label=f"stock vLLM decode at {p2b['context'][0]}-{p2b['context'][1]} ctx",
        )
    if restart.get("tok_s"):
        top.axhline(restart["tok_s"], color="C2", ls="-.", label="half-window restarts")
    top.set_xlabel("tokens generated per stream")
    top.set_ylabel("tok/s (all streams)")
    top.set_title(f"P2 streaming on {device}")
    top.set_ylim(bottom=0)
    _legend(top)
    if long.get("curve"):
        x, y = zip(*long["curve"], strict=True)
        bottom.plot(x, y, color="C3", label="plugin, one stream")
        full = long["cache_slots"] - long["prompt"]
        bottom.axvline(full, color="gray", ls=":", label="cache full")
        bottom.axvline(
            long["filled_at_tokens"], color="k", ls=":", label="measured from here"
        )
        for level, name in (
            (long.get("first_10pct_tok_s"), "first 10%"),
            (long.get("last_10pct_tok_s"), "last 10%"),
        ):
            if level:
                bottom.axhline(level, ls="--", lw=0.8, label=f"{name}: {level:.0f}")
    bottom.set_xlabel("tokens generated")
    bottom.set_ylabel("tok/s")
    bottom.set_title("P2 flatness: one long stream")
    bottom.set_ylim(bottom=0)
    _legend(bottom)
    fig.tight_layout()
    fig.savefig(out / "tokps_vs_tokens.png", dpi=120)
    plt.close(fig)
    written.append("tokps_vs_tokens.png")

    source = raw["meta"].get("memory_source", "memory")
    fig, (blocks, mib) = plt.subplots(2, 1, figsize=(9, 8), sharex=False)
    series = [
        (p2p, p2p.get("streams") or 1, "P2 plugin streams (per stream)"),
        (long, 1, "long stream"),
    ]
    for result, per, label in series:
        memory = result.get("memory") or []
        if not memory:
            continue
        x = [m["tokens"] / per for m in memory]
        blocks.plot(x, [m["kv_blocks"] / per for m in memory], label=label)
        mib.plot(x, [m["used_mib"] for m in memory], label=label)
    blocks.set_xlabel("tokens generated per stream")
    blocks.set_ylabel("KV blocks in use per stream")
    blocks.set_ylim(bottom=0)
    blocks.set_title("KV blocks held vs tokens generated")
    _legend(blocks)
    mib.set_xlabel("tokens generated per stream")
    mib.set_ylabel(f"MiB used ({source})")
    mib.set_ylim(bottom=0)
    mib.set_title("Memory vs tokens generated")
    _legend(mib)
    fig.tight_layout()
    fig.savefig(out / "memory_vs_tokens.png", dpi=120)
    plt.close(fig)
    written.append("memory_vs_tokens.png")

    soak = tasks.get("soak", {})
    if soak.get("memory"):
        fig, ax = plt.subplots(figsize=(9, 4))
        t = [m["t"] for m in soak["memory"]]
        ax.plot(t, [m["kv_blocks"] for m in soak["memory"]], label="KV blocks in use")
        ax.set_xlabel("seconds")
        ax.set_ylabel("KV blocks")
        twin = ax.twinx()
        twin.plot(
            t, [m["used_mib"] for m in soak["memory"]], color="C1", label="MiB used"
        )
        twin.set_ylabel(f"MiB used ({source})")
        ax.set_title(f"Soak: {soak['streams']} streams + the long stream")
        fig.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / "soak_memory.png", dpi=120)
        plt.close(fig)
        written.append("soak_memory.png")
    return written


def write_reports(raw: dict, out: Path) -> dict:
    """Writes summary.json, summary.md, the PNGs and raw.json; returns the summary."""
    try:
        raw["plots"] = plots(raw, out)
        raw.get("errors", {}).pop("plots", None)
    except ImportError as error:
        raw.setdefault("errors", {})["plots"] = (
            f"no plots: {error.name} is missing (pip install matplotlib, then "
            f"python -m benchmarks.gpu_bench --replot {out})"
        )
        print(f"WARNING: {raw['errors']['plots']}", flush=True)
    summary = summarize(raw)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(raw, summary))
    (out / "raw.json").write_text(json.dumps(raw, indent=1) + "\n")
    return summary
