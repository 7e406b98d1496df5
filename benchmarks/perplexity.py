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
``sink:S``              StreamingLLM with S sink tokens (rounded up to blocks)
``recompute``           sliding window with re-computation: every token
                        scored from a fresh prefill of the W tokens before it
======================  =====================================================

    python -m benchmarks.perplexity --model smollm2 --text bible \\
        --tokens 20000 --cache 256 --cache 512 --methods dense,window,sink:1,sink:4
"""

from __future__ import annotations

import argparse
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
    from vllm import SamplingParams

    params = SamplingParams(
        max_tokens=1, prompt_logprobs=0, temperature=0.0, extra_args=extra_args
    )
    out = llm.generate([{"prompt_token_ids": tokens}], params, use_tqdm=False)[0]
    return [-out.prompt_logprobs[i][t].logprob for i, t in enumerate(tokens) if i]


def recompute_nll(llm, tokens: list[int], window: int) -> list[float]:
    """Sliding window with re-computation: token t from tokens[t-W, t)."""
    from vllm import SamplingParams

    params = SamplingParams(
        max_tokens=1,
        prompt_logprobs=0,
        temperature=0.0,
        extra_args={"kv_policy": "none"},
    )
    prompts = [
        {"prompt_token_ids": tokens[max(0, t - window) : t + 1]}
        for t in range(1, len(tokens))
    ]
    outs = llm.generate(prompts, params, use_tqdm=True)
    return [
        -out.prompt_logprobs[-1][p["prompt_token_ids"][-1]].logprob
        for out, p in zip(outs, prompts, strict=True)
    ]


def perplexity(nll: list[float]) -> float:
    return math.exp(sum(nll) / len(nll))


def run_method(llm, method: Method, tokens: list[int], block_size: int) -> list[float]:
    if method.name == "dense":
        return stream_nll(
            llm, tokens[: method.cache - 1], method.extra_args(block_size)
        )
    if method.name == "recompute":
        return recompute_nll(llm, tokens, method.cache)
    return stream_nll(llm, tokens, method.extra_args(block_size))


def build_llm(args):
    from vllm import LLM

    from vllm_sink_plugin.assets import ASSETS, fetch

    model = fetch(args.model) if args.model in ASSETS else args.model
    config = {"kv_policy": "sink", "sink_request_default": "none"}
    if args.chunk:
        config["sink_prefill_chunk"] = args.chunk
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


def write_results(out: Path, rows: list[dict], curves: dict, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    # Per-token NLL of every method, for re-plotting without re-running.
    rounded = {k: [round(x, 4) for x in v] for k, v in curves.items()}
    (out / "nll.json").write_text(json.dumps(rounded))
    lines = [
        f"# Perplexity: {meta['model']} on {meta['text']} ({meta['tokens']} tokens)",
        "",
        f"`{meta['command']}`",
        "",
        "| method | cache | tokens scored | PPL | seconds |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['method']} | {r['cache']} | {r['tokens']} | {r['ppl']:.3f} | "
        f"{r['seconds']:.1f} |"
        for r in rows
    ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, nll in curves.items():
        running, total = [], 0.0
        for i, x in enumerate(nll, 1):
            total += x
            running.append(total / i)
        ax.plot(range(1, len(running) + 1), running, label=label)
    ax.set_xlabel("tokens")
    ax.set_ylabel("log PPL (running mean NLL)")
    ax.set_title(f"{meta['model']} / {meta['text']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "log_ppl_vs_tokens.png", dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="asset name or HF folder")
    parser.add_argument("--text", default="bible", help="asset name or text file")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--methods", default="dense,window,sink:1,sink:4")
    parser.add_argument("--cache", type=int, action="append", help="sinks + window")
    parser.add_argument("--chunk", type=int, help="prefill chunk (default: a window)")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--kv-cache-mib", type=int, default=512)
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality"))
    args = parser.parse_args(argv)
    caches = args.cache or [256]
    methods = parse_methods(args.methods, caches, args.max_model_len)

    try:
        import matplotlib  # noqa: F401
        from tqdm import tqdm
    except ImportError as error:
        raise SystemExit(
            f"{error.name} is missing: install the bench extra "
            "(pip install -e '.[bench]'; scripts/setup.sh does)"
        ) from None

    llm = build_llm(args)
    tokens = text_tokens(llm.get_tokenizer(), args.text, args.tokens)
    rows, curves = [], {}
    for method in tqdm(methods, desc="methods"):
        start = time.perf_counter()
        nll = run_method(llm, method, tokens, args.block_size)
        rows.append(
            {
                "method": method.label,
                "cache": method.cache,
                "tokens": len(nll),
                "ppl": perplexity(nll),
                "seconds": time.perf_counter() - start,
            }
        )
        curves[f"{method.label} ({method.cache})"] = nll
        print(json.dumps(rows[-1]), flush=True)
    meta = {
        "model": args.model,
        "text": args.text,
        "tokens": args.tokens,
        "chunk": args.chunk,
        "dtype": args.dtype,
        "command": "python -m benchmarks.perplexity "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
    }
    write_results(args.out, rows, curves, meta)


if __name__ == "__main__":
    main()
