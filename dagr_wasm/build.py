"""``dagr build``: a Python agent directory to a dagr:agent component, with componentize-py.

A build takes ~15 s, so results are cached by the hash of everything that goes into one (the agent's
files, the guest SDK, the WIT contract, the componentize-py version): building the same sources twice
costs a file copy. Sources are syntax-checked first so that a typo fails in milliseconds with a
file and line, not after a quarter of a minute inside the toolchain.

**A build runs the agent's code.** componentize-py executes ``app.py``'s top-level code (and what
it imports) at build time, to snapshot the initialised interpreter. It runs inside componentize-py's
own WASI sandbox, with every directory on its Python path mapped *writable*, and by default that
path includes the site-packages of the first ``python3`` on ``PATH`` (measured: a hostile agent
planted a ``.pth`` file in the builder's virtual environment, which then ran on every Python start).
So a build sees only throw-away copies: the agent's own files and the guest SDK are copied into a
temporary directory, componentize-py runs there with an empty environment and a ``PATH`` holding no
Python (so no site-packages is mapped), and the copies are deleted afterwards. What the agent's
top-level code can touch is those copies and nothing else; it is bounded in time by
``BUILD_TIMEOUT_S``. Symlinks that leave the agent directory are refused.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import CONTRACT
from .errors import AgentSourceError
from .manifest import MANIFEST_FILE, load_manifest
from .paths import build_cache_dir, source_root

__all__ = ["BuildResult", "build_agent", "contract_dirs", "source_digest"]

ENTRY_MODULE = "app"
WORLD = "agent"
_SKIP_DIRS = {"build", "__pycache__", ".pytest_cache", ".mypy_cache"}
_SKIP_SUFFIXES = {".wasm", ".cwasm", ".pyc"}
#: How long componentize-py (and so the agent's top-level code) may run; DAGR_BUILD_TIMEOUT_S overrides.
BUILD_TIMEOUT_S = 300


def _build_timeout_s() -> float:
    try:
        return float(os.environ.get("DAGR_BUILD_TIMEOUT_S") or BUILD_TIMEOUT_S)
    except ValueError:
        return BUILD_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class BuildResult:
    wasm: Path
    digest: str
    size_bytes: int
    cached: bool
    seconds: float


def contract_dirs() -> tuple[Path, Path]:
    """(wit dir, guest SDK dir): from DAGR_WIT_DIR / DAGR_GUEST_SDK_DIR, else the source checkout."""
    root = source_root()
    wit = Path(os.environ.get("DAGR_WIT_DIR") or root / "wit")
    sdk = Path(os.environ.get("DAGR_GUEST_SDK_DIR") or root / "guest-sdk" / "python")
    for path, variable in ((wit, "DAGR_WIT_DIR"), (sdk, "DAGR_GUEST_SDK_DIR")):
        if not path.is_dir():
            raise AgentSourceError(
                str(path),
                "the dagr contract is not where it was expected",
                detail=f"Run from a dagr-wasm checkout, or set {variable} to the directory.",
            )
    return wit, sdk


def _files(directory: Path, *, suffixes: set[str] | None = None) -> list[Path]:
    found = []
    for path in sorted(directory.rglob("*")):
        if not path.is_file() or any(part in _SKIP_DIRS for part in path.relative_to(directory).parts):
            continue
        if path.suffix in _SKIP_SUFFIXES or (suffixes is not None and path.suffix not in suffixes):
            continue
        found.append(path)
    return found


def source_digest(agent_dir: Path) -> str:
    """The hash of everything a build of ``agent_dir`` depends on."""
    wit, sdk = contract_dirs()
    h = hashlib.sha256()
    h.update(f"{CONTRACT}\ncomponentize-py {importlib.metadata.version('componentize-py')}\n".encode())
    for label, directory, suffixes in (
        ("wit", wit, {".wit"}),
        ("sdk", sdk, {".py", ".pyi", ".toml"}),
        ("agent", agent_dir, None),
    ):
        for path in _files(directory, suffixes=suffixes):
            h.update(f"{label}:{path.relative_to(directory).as_posix()}\n".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _check_sources(agent_dir: Path) -> None:
    if not agent_dir.is_dir():
        what = "does not exist" if not agent_dir.exists() else "is not a directory"
        raise AgentSourceError(str(agent_dir), f"it {what}", detail="Pass the directory holding app.py.")
    entry = agent_dir / f"{ENTRY_MODULE}.py"
    if not entry.is_file():
        raise AgentSourceError(
            str(agent_dir),
            f"there is no {ENTRY_MODULE}.py",
            detail="An agent directory holds app.py, which defines `Handler` "
            "(e.g. `Handler = dagr_agent.handler(MyAgent)`); see guest-sdk/python/README.md.",
        )
    for path in _files(agent_dir, suffixes={".py"}):
        try:
            compile(path.read_text(encoding="utf-8"), str(path), "exec")
        except SyntaxError as exc:
            raise AgentSourceError(
                str(agent_dir),
                f"{path.name}:{exc.lineno}: {exc.msg}",
                detail=(exc.text or "").rstrip(),
            ) from None
        except UnicodeDecodeError:
            raise AgentSourceError(str(agent_dir), f"{path.name} is not UTF-8 text") from None
    if not re.search(r"^\s*Handler\s*=|^\s*class\s+Handler\b", entry.read_text(encoding="utf-8"), re.M):
        raise AgentSourceError(
            str(agent_dir),
            f"{ENTRY_MODULE}.py does not define `Handler`",
            detail="componentize-py calls `app.Handler().handle(event)`: add "
            "`Handler = dagr_agent.handler(MyAgent)`.",
        )


def build_agent(
    agent_dir: Path,
    *,
    out: Path | None = None,
    progress: Callable[[str], None] | None = None,
    use_cache: bool = True,
) -> BuildResult:
    """Build ``agent_dir`` into a component at ``out`` (default: AGENT_DIR/build/NAME.wasm)."""
    say = progress or (lambda _message: None)
    started = time.perf_counter()
    agent_dir = agent_dir.resolve()
    say("checking sources")
    _check_sources(agent_dir)
    if (agent_dir / MANIFEST_FILE).is_file():
        load_manifest(agent_dir / MANIFEST_FILE)  # a manifest that does not validate fails the build
    wit, sdk = contract_dirs()
    target = out or agent_dir / "build" / f"{agent_dir.name}.wasm"
    key = source_digest(agent_dir)
    cached = build_cache_dir() / f"{key}.wasm"
    if use_cache and cached.is_file():
        say("found in the build cache")
        _place(cached, target)
        return _result(target, cached=True, started=started)

    say("componentizing with componentize-py (about 15 s)")
    with tempfile.TemporaryDirectory(prefix="dagr-build-") as tmp:
        root = Path(tmp)
        produced = root / "agent.wasm"
        agent_copy, sdk_copy = root / "agent", root / "sdk"
        _copy_sources(agent_dir, agent_copy)
        _copy_sources(sdk, sdk_copy)
        (root / "bin").mkdir()
        command = [
            sys.executable,
            "-I",  # no PYTHONPATH, no user site: only this environment's componentize-py
            "-c",
            "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; script()",
            "-d", str(wit), "-w", WORLD,
            "componentize", ENTRY_MODULE,
            "-p", str(agent_copy), "-p", str(sdk_copy),
            "-o", str(produced),
        ]  # fmt: skip
        # Nothing of the caller's environment: no VIRTUAL_ENV, no PYTHON*, and a PATH with no
        # python3 on it, so componentize-py maps no site-packages into the build.
        env = {"PATH": str(root / "bin"), "HOME": str(root), "LANG": "C.UTF-8", "TMPDIR": str(root)}
        timeout_s = _build_timeout_s()
        try:
            completed = subprocess.run(
                command,
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise AgentSourceError(
                str(agent_dir),
                f"componentize-py ran longer than {timeout_s:g} s",
                detail="A build runs the agent's top-level code: does app.py loop or block at import?",
            ) from None
        if completed.returncode != 0 or not produced.is_file():
            raise _explain_failure(agent_dir, completed.stdout + completed.stderr)
        build_cache_dir().mkdir(parents=True, exist_ok=True)
        staged = cached.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(produced, staged)
        staged.replace(cached)
    _place(cached, target)
    say("built")
    return _result(target, cached=False, started=started)


def _copy_sources(source: Path, target: Path) -> None:
    """Copy the files a build uses (``_files``) as plain files; refuse links that leave ``source``."""
    root = source.resolve()
    for path in _files(source):
        if not path.resolve().is_relative_to(root):  # a symlink, or a file under a symlinked dir
            raise AgentSourceError(
                str(source),
                f"{path.relative_to(source)} leads to {path.resolve()}, outside the directory",
                detail="A build only reads the agent's own directory: copy the file in instead.",
            )
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, staged)
    staged.replace(target)


def _result(target: Path, *, cached: bool, started: float) -> BuildResult:
    data = target.read_bytes()
    return BuildResult(
        wasm=target,
        digest=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        cached=cached,
        seconds=time.perf_counter() - started,
    )


def _python_traceback(output: str, agent_dir: Path) -> tuple[str, str] | None:
    """The agent's own Python traceback in componentize-py's output, and its exception line.

    componentize-py wraps it in a Rust error chain ("Caused by: ..."); the agent's author wants the
    Python part, with the agent's paths (mapped by componentize-py to /0, /1, ...) as they wrote them.
    """
    start = output.rfind("Traceback (most recent call last):")  # the agent's, inside the wrapper's
    if start < 0:
        return None
    lines: list[str] = []
    for line in output[start:].splitlines():
        if lines and not line.strip():
            break
        lines.append(re.sub(r'File "/0/', f'File "{agent_dir}/', line))
    exception = next((ln for ln in reversed(lines) if ln and not ln.startswith(" ")), "")
    return "\n".join(lines), exception


def _explain_failure(agent_dir: Path, output: str) -> AgentSourceError:
    tail = "\n".join(output.strip().splitlines()[-15:])
    raised = _python_traceback(output, agent_dir)
    missing = re.search(r"No module named '([^']+)'", output)
    if missing:
        return AgentSourceError(
            str(agent_dir),
            f"it imports {missing.group(1)!r}, which is not available inside an agent",
            detail="An agent can use the standard library, dagr_agent and modules in its own directory.\n"
            + tail,
        )
    if "Handler" in output and ("AttributeError" in output or "has no attribute" in output):
        return AgentSourceError(
            str(agent_dir),
            "app.Handler does not match the dagr:agent contract",
            detail="Define `Handler = dagr_agent.handler(MyAgent)`.\n" + tail,
        )
    if raised is not None:
        traceback, exception = raised
        return AgentSourceError(
            str(agent_dir),
            f"importing app.py raised {exception}",
            detail=traceback
            + "\nA build runs the agent's top-level code (imports, module-level statements).",
        )
    return AgentSourceError(str(agent_dir), "componentize-py failed", detail=tail)
