# Recipes for dagr-wasm. `just --list` shows them. They assume the dev install:
#   python -m venv .venv && . .venv/bin/activate && pip install -r requirements-dev.txt

python := env_var_or_default("PYTHON", "python")

# Install dagr-wasm with the dev tools into the active environment.
setup:
    {{python}} -m pip install -r requirements-dev.txt

# Build every agent in agents/ (cached by source hash; about 15 s each when cold).
agents:
    for dir in agents/*/; do dagr build "$dir"; done

# An embedded nats-server and a host, in the foreground (Ctrl-C stops; data stays).
up *ARGS:
    dagr up {{ARGS}}

# The demo: an orchestrator, five stock analysts, a report.
demo *ARGS:
    dagr demo {{ARGS}}

# Run the test suite (what CI runs).
test *ARGS:
    {{python}} -m pytest {{ARGS}}

# Lint and type-check.
lint:
    {{python}} -m ruff check dagr_wasm tests benchmarks
    {{python}} -m ruff format --check dagr_wasm
    {{python}} -m mypy

# Benchmark the sandbox against bare wasmtime-py (alone; `just bench` has it too).
bench-sandbox *ARGS:
    {{python}} benchmarks/bench_sandbox.py {{ARGS}}

# Benchmark the mesh: real host processes on an embedded nats-server (--quick: about 6 min).
bench-mesh *ARGS:
    {{python}} benchmarks/bench_mesh.py {{ARGS}}

# A benign agent's latency beside four hostile ones, on one host process (about 3 min).
bench-fairness *ARGS:
    {{python}} benchmarks/bench_fairness.py {{ARGS}}

# The local model's speed (load, prompt and generation tokens/s, a tool call's turn).
bench-local-model *ARGS:
    {{python}} benchmarks/bench_local_model.py {{ARGS}}

# A model turn's runtime overhead beside bare HTTP; agents awaiting a model (about 3 min; --full: 10).
bench-models *ARGS:
    {{python}} benchmarks/bench_models.py {{ARGS}}

# Every benchmark, bounded (<15 min on 2 cores; --quick ~2): one table, each figure beside its floor or peer.
bench *ARGS:
    {{python}} benchmarks/bench_all.py {{ARGS}}
