# SPDX-License-Identifier: Apache-2.0
"""Long-stream perplexity through the real vLLM engine with the plugin.

Teacher-forced per-token NLL of a long text streamed through the cache: one
request whose prompt is the whole text, ``prompt_logprobs=0`` (the logprob of
each actual next token) and ``max_tokens=1``; the engine feeds it in chunks
of ``--chunk`` tokens (the paper feeds one) with eviction between chunks.

Methods (all in one engine; cache sizes are sinks + window, in tokens):

======================  =====================================================
``dense``               stock vLLM (``kv_policy none``) over the first
                        ``max_model_len`` tokens (it cannot go further)
``window``              window attention, no sinks (``num_sink_tokens 0``)
``sink:S``              StreamingLLM with S sink tokens (rounded up to blocks;
                        exactly S with ``--exact-sinks``, CPU only)
``recompute``           sliding window with re-computation: every token
                        scored from a fresh prefill of the W tokens before it
======================  =====================================================

    python -m benchmarks.perplexity --model smollm2 --text bible \\
        --tokens 20000 --cache 256 --cache 512 --methods dense,window,sink:1,sink:4
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import math
import time
from pathlib import Path


@dataclasses.dataclass(frozen=True, kw_only=True)
class Method:
    """One row of the results: how the text is streamed."""

    name: str  # "dense", "window", "sink", "recompute"
    cache: int  # sinks + window tokens (dense: max_model_len)
    num_sink_tokens: int = 0

    @property
    def label(self) -> str:
        if self.name == "sink":
            return f"sink:{self.num_sink_tokens}"
        return self.name

    def extra_args(self, block_size: int) -> dict:
        """Per-request fields: the cache is split into sinks + window."""
        if self.name in ("dense", "recompute"):
            return {"kv_policy": "none"}
        from vllm_sink_plugin.core.window import SinkWindow

        sinks = SinkWindow.from_tokens(
            block_size=block_size,
            num_sink_tokens=self.num_sink_tokens,
            sink_window=self.cache,
        ).num_sink_slots
        return {
            "kv_policy": "sink",
            "num_sink_tokens": self.num_sink_tokens,
            "sink_window": self.cache - sinks,
        }


def parse_methods(spec: str, caches: list[int], max_model_len: int) -> list[Method]:
    methods = []
    for item in spec.split(","):
        name, _, arg = item.strip().partition(":")
        if name == "dense":
            methods.append(Method(name="dense", cache=max_model_len))
            continue
        if name not in ("window", "sink", "recompute"):
            raise SystemExit(f"--methods: unknown method {item!r}")
        for cache in caches:
            sinks = int(arg or 4) if name == "sink" else 0
            methods.append(Method(name=name, cache=cache, num_sink_tokens=sinks))
    return methods


def text_tokens(tokenizer, text_name: str, num_tokens: int) -> list[int]:
    """The first ``num_tokens`` tokens of a text asset (or a file path)."""
    from vllm_sink_plugin.assets import ASSETS, fetch

    path = fetch(text_name) if text_name in ASSETS else Path(text_name)
    ids: list[int] = []
    with open(path, encoding="utf-8") as f:
        while len(ids) < num_tokens:
            piece = f.read(1 << 20)
            if not piece:
                break
            ids += tokenizer.encode(piece, add_special_tokens=False)
    if len(ids) < num_tokens:
        raise SystemExit(f"{text_name} has only {len(ids)} tokens")
    return ids[:num_tokens]


def stream_nll(llm, tokens: list[int], extra_args: dict) -> list[float]:
    """Per-token NLL of ``tokens[1:]`` from one streamed request."""
    return streams_nll(llm, [tokens], [extra_args])[0]


def streams_nll(
    llm, token_lists: list[list[int]], extra_args: list[dict]
) -> list[list[float]]:
    """:func:`stream_nll` of several streams at once (batched in one engine)."""
    from vllm import SamplingParams

    params = [
        SamplingParams(
            max_tokens=1,
            prompt_logprobs=0,
            temperature=0.0,
            detokenize=False,
            extra_args=extra,
        )
        for extra in extra_args
    ]
    prompts = [{"prompt_token_ids": tokens} for tokens in token_lists]
    outs = llm.generate(prompts, params, use_tqdm=False)
    return [
        [-out.prompt_logprobs[i][t].logprob for i, t in enumerate(tokens) if i]
        for out, tokens in zip(outs, token_lists, strict=True)
    ]


def recompute_nll(
    llm, tokens: list[int], window: int, positions: list[int]
) -> list[float]:
    """Sliding window with re-computation: token t from tokens[t-W, t)."""
    from vllm import SamplingParams

    params = SamplingParams(
        max_tokens=1,
        prompt_logprobs=0,
        temperature=0.0,
        detokenize=False,
        extra_args={"kv_policy": "none"},
    )
    prompts = [
        {"prompt_token_ids": tokens[max(0, t - window) : t + 1]} for t in positions
    ]
    outs = llm.generate(prompts, params, use_tqdm=True)
    return [
        -out.prompt_logprobs[-1][p["prompt_token_ids"][-1]].logprob
        for out, p in zip(outs, prompts, strict=True)
    ]


def perplexity(nll: list[float]) -> float:
    return math.exp(sum(nll) / len(nll))


def stream_tokens(method: Method, tokens: list[int]) -> list[int]:
    """The tokens a streamed method scores (dense stops at max_model_len)."""
    return tokens[: method.cache - 1] if method.name == "dense" else tokens


@dataclasses.dataclass(frozen=True)
class Scores:
    """One method's NLL of ``tokens[t]`` for each scored position ``t``.

    ``positions`` ascend without repeats, so a run of ``k`` positions is
    gap-free exactly when its last minus its first is ``k - 1``.
    """

    positions: list[int]
    nll: list[float]
    seconds: float

    @property
    def prefix(self) -> int:
        """How many tokens ``1 .. n`` are scored without a gap."""
        # positions[i] - i never decreases: count the leading ones equal to 1.
        p = self.positions
        return bisect.bisect_right(range(len(p)), 1, key=lambda i: p[i] - i)

    def ppl_over(self, start: int, end: int) -> float | None:
        """PPL over tokens ``start .. end - 1`` if all of them are scored."""
        i = bisect.bisect_left(self.positions, start)
        j = i + (end - start)
        if j > len(self.positions) or self.positions[j - 1] != end - 1:
            return None
        if self.positions[i] != start:
            return None
        return perplexity(self.nll[i:j])


def parse_range(spec: str) -> tuple[int, int]:
    start, _, end = spec.partition(":")
    try:
        first, last = int(start), int(end)
    except ValueError:
        raise SystemExit(f"--score-range: expected START:END, got {spec!r}") from None
    if not 1 <= first < last:
        raise SystemExit(f"--score-range: need 1 <= START < END, got {spec!r}")
    return first, last


def recompute_positions(args, num_tokens: int) -> list[int]:
    """The positions re-computation scores: the ranges, else a prefix."""
    if args.score_range:
        picked = sorted({t for a, b in args.score_range for t in range(a, b)})
        if picked[-1] >= num_tokens:
            raise SystemExit(f"--score-range goes past --tokens {num_tokens}")
        return picked
    return list(range(1, (args.recompute_tokens or num_tokens - 1) + 1))


def run_methods(llm, methods: list[Method], tokens: list[int], args) -> dict:
    """:class:`Scores` per method; the streamed ones run concurrently."""
    results = {}
    streamed = [m for m in methods if m.name != "recompute"]
    if streamed:
        start = time.perf_counter()
        nlls = streams_nll(
            llm,
            [stream_tokens(m, tokens) for m in streamed],
            [m.extra_args(args.block_size) for m in streamed],
        )
        seconds = time.perf_counter() - start
        for method, nll in zip(streamed, nlls, strict=True):
            results[method] = Scores(list(range(1, len(nll) + 1)), nll, seconds)
    for method in methods:
        if method.name == "recompute":
            start = time.perf_counter()
            positions = recompute_positions(args, len(tokens))
            nll = recompute_nll(llm, tokens, method.cache, positions)
            results[method] = Scores(positions, nll, time.perf_counter() - start)
    return results


def flatness(nll: list[float], fill: int) -> float | None:
    """PPL of the last 10 % over the first 10 % of the tokens after ``fill``."""
    after = nll[fill:]
    tenth = len(after) // 10
    if tenth < 1:
        return None
    return perplexity(after[-tenth:]) / perplexity(after[:tenth])


def buckets(nll: list[float], size: int) -> list[float]:
    """Mean NLL (log PPL) of consecutive ``size``-token buckets."""
    return [
        round(sum(nll[i : i + size]) / len(nll[i : i + size]), 4)
        for i in range(0, len(nll), size)
    ]


def build_llm(args, sink: bool = True):
    """The engine; ``sink=False``: stock vLLM (dense and recompute only)."""
    from vllm import LLM

    from vllm_sink_plugin.assets import ASSETS, fetch
    from vllm_sink_plugin.config import DEFAULT_SINK_MAX_PROMPT_TOKENS

    model = fetch(args.model) if args.model in ASSETS else args.model
    config = {"kv_policy": "sink", "sink_request_default": "none"} if sink else {}
    if sink and args.chunk:
        config["sink_prefill_chunk"] = args.chunk
    if sink and args.exact_sinks:
        config["sink_exact_tokens"] = True
    if sink:  # the whole text is one prompt (README "Errors": the prompt cap)
        cap = max(DEFAULT_SINK_MAX_PROMPT_TOKENS, args.tokens)
        config["sink_max_prompt_tokens"] = cap
    return LLM(
        str(model),
        max_model_len=args.max_model_len,
        block_size=args.block_size,
        dtype=args.dtype,
        enforce_eager=args.enforce_eager,
        kv_cache_memory_bytes=args.kv_cache_mib << 20,
        additional_config=config,
        seed=0,
    )


def bucket_size(num_tokens: int) -> int:
    """Bucket width for the curves: about 400 buckets, at least 32 tokens."""
    return max(32, num_tokens // 400)


def write_results(out: Path, rows: list[dict], curves: dict, meta: dict) -> None:
    """summary.json / .md, the bucketed curves, and the log-PPL plot."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    size = bucket_size(max((len(v) for v in curves.values()), default=1))
    # Per-bucket log PPL of every method, for re-plotting without re-running.
    bucketed = {k: buckets(v, size) for k, v in curves.items()}
    (out / "curves.json").write_text(json.dumps({"bucket": size, **bucketed}))
    if meta.get("save_nll"):
        rounded = {k: [round(x, 4) for x in v] for k, v in curves.items()}
        (out / "nll.json").write_text(json.dumps(rounded))
    common = rows[0]["common_tokens"]
    ranges = list(rows[0].get("ranges", {}))
    lines = [
        f"# Perplexity: {meta['model']} on {meta['text']} ({meta['tokens']} tokens, "
        f"{meta['dtype']}, {meta['device']})",
        "",
        f"`{meta['command']}`",
        "",
        f"PPL over all tokens each method scores, over the first {common} tokens "
        "(the range every method scores from the start), over each "
        "`--score-range`, and the last 10 % over the first 10 % of the tokens "
        "after the cache fills.",
        "",
        "| method | cache | tokens scored | PPL | PPL first "
        f"{common} | "
        + "".join(f"PPL {r} | " for r in ranges)
        + "last/first 10 % | seconds |",
        "|---|---|---|---|---|" + "---|" * len(ranges) + "---|---|",
    ]

    def num(x):
        return "—" if x is None else f"{x:.3f}"

    for r in rows:
        cells = [r["method"], r["cache"], r["tokens"], num(r["ppl"])]
        cells += [num(r["ppl_common"])]
        cells += [num(r.get("ranges", {}).get(k)) for k in ranges]
        cells += [num(r["flatness"]), f"{r['seconds']:.1f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    try:
        plot_curves(out / "log_ppl_vs_tokens.png", bucketed, size, meta)
    except ImportError:  # e.g. the GPU machine: plot later with --replot
        print(f"matplotlib is missing: no plot; run --replot {out} where it is")


def replot(out: Path) -> None:
    """Rebuilds the plot of a results folder from its JSON files."""
    meta = json.loads((out / "summary.json").read_text())
    bucketed = json.loads((out / "curves.json").read_text())
    size = bucketed.pop("bucket")
    plot_curves(out / "log_ppl_vs_tokens.png", bucketed, size, meta)


def plot_curves(path: Path, bucketed: dict, size: int, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, values in bucketed.items():
        ax.plot([(i + 1) * size for i in range(len(values))], values, label=label)
    ax.set_xlabel("tokens")
    ax.set_ylabel(f"log PPL ({size}-token buckets)")
    ax.set_title(f"{meta['model']} / {meta['text']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="asset name or HF folder")
    parser.add_argument("--text", default="bible", help="asset name or text file")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--methods", default="dense,window,sink:1,sink:4")
    parser.add_argument("--cache", type=int, action="append", help="sinks + window")
    parser.add_argument(
        "--chunk",
        type=lambda v: None if v == "window" else int(v),
        default=32,
        help="sink prefill chunk in tokens, or 'window' for the serving default "
        "(one window). Default 32: within 1%% of the paper's token-by-token "
        "feeding (benchmarks/results/quality/cpu/)",
    )
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--kv-cache-mib", type=int, default=512)
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument(
        "--exact-sinks",
        action="store_true",
        help="--sink-exact-tokens: sink:S attends exactly S sinks once the "
        "window rolls (the sink block's other slots masked; the window keeps "
        "cache - ceil(S/B)*B tokens). Raw-key CPU backend only",
    )
    scored = parser.add_mutually_exclusive_group()
    scored.add_argument(
        "--recompute-tokens",
        type=int,
        help="recompute scores only the first N tokens (default: all)",
    )
    scored.add_argument(
        "--score-range",
        type=parse_range,
        action="append",
        default=[],
        metavar="START:END",
        help="recompute scores only tokens START..END-1 (repeatable); every "
        "method reports its PPL over each range",
    )
    parser.add_argument(
        "--save-nll", action="store_true", help="also write per-token nll.json"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality"))
    parser.add_argument(
        "--replot", type=Path, metavar="DIR", help="only re-plot a results folder"
    )
    args = parser.parse_args(argv)
    if args.replot:
        return replot(args.replot)
    caches = args.cache or [256]
    methods = parse_methods(args.methods, caches, args.max_model_len)

    llm = build_llm(args, sink=any(m.name in ("window", "sink") for m in methods))
    tokens = text_tokens(llm.get_tokenizer(), args.text, args.tokens)
    results = run_methods(llm, methods, tokens, args)
    common = min((r.prefix for r in results.values() if r.prefix), default=0)
    rows, curves = [], {}
    for method in methods:
        scores = results[method]
        contiguous = scores.prefix == len(scores.nll)
        rows.append(
            {
                "method": method.label,
                "cache": method.cache,
                "tokens": len(scores.nll),
                "ppl": perplexity(scores.nll),
                "common_tokens": common,
                "ppl_common": scores.ppl_over(1, common + 1) if common else None,
                "flatness": flatness(scores.nll, method.cache)
                if contiguous and method.name != "dense"
                else None,
                "ranges": {
                    f"{a}:{b}": scores.ppl_over(a, b) for a, b in args.score_range
                },
                "seconds": scores.seconds,
            }
        )
        if contiguous:
            curves[f"{method.label} ({method.cache})"] = scores.nll
        print(json.dumps(rows[-1]), flush=True)
    import torch

    meta = {
        "model": args.model,
        "text": args.text,
        "tokens": args.tokens,
        "chunk": args.chunk,
        "dtype": args.dtype,
        "block_size": args.block_size,
        "exact_sinks": args.exact_sinks,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "save_nll": args.save_nll,
        "command": "python -m benchmarks.perplexity "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
    }
    write_results(args.out, rows, curves, meta)


if __name__ == "__main__":
    main()
