"""The local model's speed: SmolLM2-135M-Instruct through llama-cpp-python, as the `local` provider
runs it (dagr_wasm.models._local, the same load settings and the same constrained decoding).

Figures: load time; prompt processing and generation in tokens per second, free text and
constrained to a tool call's JSON schema; one whole call as an agent's turn makes it. Prints a
table and writes docs/bench/local_model.json.

    python benchmarks/bench_local_model.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from dagr_wasm.chat import ChatMessage, ChatRequest, ToolDefinition
from dagr_wasm.models import DEFAULT_LOCAL_MODEL
from dagr_wasm.models._local import LOCAL_CONTEXT_TOKENS, LocalModels, model_file

OUT = Path(__file__).resolve().parents[1] / "docs" / "bench" / "local_model.json"
SPAWN = ToolDefinition(
    "spawn",
    "Ask a specialist and wait for its answer.",
    json.dumps(
        {
            "type": "object",
            "properties": {"specialist": {"enum": ["stock-analyst"]}, "task": {"type": "string"}},
            "required": ["specialist", "task"],
        }
    ),
)


def request(*, tools: bool, max_tokens: int) -> ChatRequest:
    return ChatRequest(
        model="fast",
        messages=(
            ChatMessage("system", ("You are the main agent of a team of agents. Delegate the analysis.",)),
            ChatMessage("user", ("Check GME sentiment on Reddit, then write a poem about the sea.",)),
        ),
        tools=(SPAWN,) if tools else (),
        tool_choice="required" if tools else "auto",
        max_output_tokens=max_tokens,
        temperature=0.7,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=OUT, help=f"where the figures go (default {OUT})")
    args = parser.parse_args()
    out: Path = args.json

    from llama_cpp import Llama

    path = model_file(DEFAULT_LOCAL_MODEL)
    threads = max(1, min(2, os.cpu_count() or 1))
    began = time.perf_counter()
    llm = Llama(model_path=str(path), n_ctx=LOCAL_CONTEXT_TOKENS, n_threads=threads, verbose=False)
    load_s = time.perf_counter() - began

    # Prompt processing alone: a long prompt, one token out.
    prompt = "The quick brown fox jumps over the lazy dog. " * 60
    tokens = len(llm.tokenize(prompt.encode()))
    prompt_rates = []
    for _ in range(args.runs):
        llm.reset()
        began = time.perf_counter()
        llm.create_completion(prompt, max_tokens=1)
        prompt_rates.append(tokens / (time.perf_counter() - began))
    del llm

    local = LocalModels(threads=threads)
    rows: dict[str, Any] = {}
    for name, tools, max_tokens in (("free text", False, 128), ("tool call (JSON schema)", True, 64)):
        rates, turns = [], []
        for _ in range(args.runs):
            began = time.perf_counter()
            answer = asyncio.run(
                local.chat(
                    request(tools=tools, max_tokens=max_tokens),
                    model=DEFAULT_LOCAL_MODEL,
                    max_output_tokens=max_tokens,
                )
            )
            elapsed = time.perf_counter() - began
            turns.append(elapsed)
            rates.append(answer.usage.output_tokens / elapsed)
        rows[name] = {
            "output_tokens_per_s_median": statistics.median(rates),
            "call_s_median": statistics.median(turns),
            "call_s_max": max(turns),
        }

    figures = {
        "model": path.name,
        "model_bytes": path.stat().st_size,
        "threads": threads,
        "context_tokens": LOCAL_CONTEXT_TOKENS,
        "load_s": load_s,
        "prompt_tokens_per_s_median": statistics.median(prompt_rates),
        "calls": rows,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}",
        "runs": args.runs,
    }
    size_mb = path.stat().st_size / 1e6
    print(f"\nlocal model {path.name} ({size_mb:.0f} MB), {threads} threads, {figures['machine']}")
    print(f"{'what':<28}{'tokens/s (median)':>20}{'call s (median)':>18}{'call s (max)':>15}")
    print(f"{'load':<28}{'':>20}{load_s:>18.2f}{'':>15}")
    print(f"{'prompt processing':<28}{figures['prompt_tokens_per_s_median']:>20.0f}{'':>18}{'':>15}")
    for name, row in rows.items():
        print(
            f"{name:<28}{row['output_tokens_per_s_median']:>20.1f}{row['call_s_median']:>18.2f}"
            f"{row['call_s_max']:>15.2f}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")


if __name__ == "__main__":
    main()
