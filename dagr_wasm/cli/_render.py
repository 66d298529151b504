"""Turning results into output: one JSON document for ``--json``, rich tables for people.

The JSON field names are part of the CLI's contract (docs/cli.md); change them only with a version.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..chat import request_doc
from ..invocation import (
    Await,
    Effect,
    HttpCall,
    ModelCall,
    Outcome,
    Publish,
    RepliesConsumed,
    SignalSend,
    Spawn,
    StateDelete,
    StatePut,
    Status,
    Suspend,
)
from ..mesh import DeadLetter, InstanceResult, JournalRecord, ModelCallRecord, TreeNode
from ..payload import decode_map, to_tagged
from ..policy import Grants

__all__ = [
    "ApproveGrants",
    "JsonFlag",
    "dead_letter_row",
    "describe",
    "err_console",
    "error_json",
    "inert",
    "iso_ms",
    "log_record_view",
    "outcome_json",
    "payload_text",
    "print_json",
    "record_json",
    "render_outcome",
    "safe",
    "status_table",
    "stdout_console",
    "tree_view",
    "warn_broad_grants",
]

#: The flag a deploy needs when it widens a specialist's grants.
ApproveGrants = Annotated[
    bool,
    typer.Option(
        "--approve-grants",
        help="Allow this version more grants than the current one has (the difference is shown first).",
    ),
]

#: The --json flag every data command takes.
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of text.")]

# Piped output (an agent's bash tool, a script) gets wide lines instead of ids cut short with "…";
# a terminal keeps its own width.
stdout_console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 240)
err_console = Console(
    stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 240
)


# C0 and C1 controls (ESC starts ANSI and OSC sequences: colours, titles, hyperlinks, clipboard
# writes) and the bidirectional overrides that make text read other than it is. Newline and tab stay.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe(text: object) -> str:
    """``text`` with every terminal control character shown as an escape (``\x1b``), never obeyed."""
    return _UNSAFE.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
        str(text),
    )


def inert(text: object, style: str = "") -> Text:
    """Text that came from an agent (logs, errors, results, names), safe to print to a terminal.

    A ``Text`` is never parsed as Rich markup (``[/x]`` in an error stays text), and ``safe``
    neutralises escape sequences, so guest data cannot restyle, retitle or rewrite the terminal.
    """
    return Text(safe(text), style=style)


def warn_broad_grants(grants: Grants) -> None:
    """Say so when a manifest grants wide publish patterns: allowed, but worth a second look."""
    for pattern in grants.broad_patterns():
        err_console.print(
            Text("warning: ", style="yellow").append(
                inert(f"grants.publish {pattern!r} is broad: the agent may publish to any subject it matches")
            )
        )


def error_json(code: str, kind: str, message: str, hint: str) -> dict[str, Any]:
    """The JSON document of a failed command: ``code`` is ``usage`` (exit 2) or ``runtime`` (exit 1)."""
    return {"error": {"code": code, "type": kind, "message": message, "hint": hint}}


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def iso_ms(unix_ms: int) -> str:
    return (
        datetime.fromtimestamp(unix_ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def effect_json(effect: Effect) -> dict[str, Any]:
    if isinstance(effect, StatePut):
        return {
            "kind": effect.kind,
            "scope": effect.scope,
            "key": effect.key,
            "value": to_tagged(effect.value),
        }
    if isinstance(effect, StateDelete):
        return {"kind": effect.kind, "scope": effect.scope, "key": effect.key}
    if isinstance(effect, Publish):
        return {"kind": effect.kind, "subject": effect.subject, "payload": to_tagged(effect.payload)}
    if isinstance(effect, Spawn):
        return {
            "kind": effect.kind,
            "child_id": effect.child_id,
            "specialist": effect.specialist,
            "context": effect.context,
            "reply_to": effect.reply_to,
        }
    if isinstance(effect, Suspend):
        return {
            "kind": effect.kind,
            "wake_at": iso_ms(effect.wake_at_unix_ms),
            "wake_at_unix_ms": effect.wake_at_unix_ms,
            "resume_context": effect.resume_context,
        }
    if isinstance(effect, Await):
        return {
            "kind": effect.kind,
            "handles": list(effect.handles),
            "mode": effect.mode,
            "deadline": iso_ms(effect.deadline_unix_ms),
            "deadline_unix_ms": effect.deadline_unix_ms,
            "resume_context": effect.resume_context,
        }
    if isinstance(effect, HttpCall):
        r = effect.request
        return {
            "kind": effect.kind,
            "handle": effect.handle,
            "method": r.method,
            "url": r.url,
            "headers": [list(h) for h in r.headers],
            "body": to_tagged(r.body),
        }
    if isinstance(effect, ModelCall):
        return {"kind": effect.kind, "handle": effect.handle, "request": request_doc(effect.request)}
    if isinstance(effect, SignalSend):
        return {
            "kind": effect.kind,
            "instance": effect.instance_id,
            "name": effect.name,
            "data": to_tagged(effect.data),
        }
    if isinstance(effect, RepliesConsumed):
        return {"kind": effect.kind, "seqs": list(effect.seqs)}
    raise TypeError(f"unknown effect {effect!r}")


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "status": outcome.status.value,
        "result": to_tagged(outcome.result) if outcome.result is not None else None,
        "failure": outcome.failure,
        "error": {"kind": outcome.error.kind.value, "message": outcome.error.message}
        if outcome.error
        else None,
        "effects": [effect_json(e) for e in outcome.effects],
        "committed": outcome.committable,
        "fuel_used": outcome.fuel_used,
        "wall_time_ms": round(outcome.wall_time_s * 1000, 3),
        "peak_memory_bytes": outcome.peak_memory_bytes,
        "host_calls": outcome.host_calls,
        "logs": [{"level": line.level, "message": line.message} for line in outcome.logs],
        "log_bytes_dropped": outcome.log_bytes_dropped,
    }


_STATUS_STYLE = {
    Status.OK: "bold green",
    Status.SUSPENDED: "bold cyan",
    Status.FAILED: "bold yellow",
    Status.ERROR: "bold red",
}


def payload_text(data: bytes, *, indent: int | None = None) -> str:
    """A payload for people: its CBOR value as JSON, or the bytes as base64 (unescaped: render
    it with ``inert``)."""
    tagged = to_tagged(data)
    return (
        json.dumps(tagged["cbor"], indent=indent, ensure_ascii=False)
        if "cbor" in tagged
        else tagged["base64"]
    )


def _value(tagged: dict[str, Any]) -> str:
    if "cbor" in tagged:
        return json.dumps(tagged["cbor"], ensure_ascii=False)
    return f"<{len(tagged['base64']) * 3 // 4} bytes, base64 {tagged['base64'][:40]}…>"


def _effect_line(effect: Effect) -> str:
    data = effect_json(effect)
    if isinstance(effect, StatePut):
        return f"state {effect.scope} {effect.key} = {_value(data['value'])}"
    if isinstance(effect, StateDelete):
        return f"state {effect.scope} {effect.key} deleted"
    if isinstance(effect, Publish):
        return f"publish {effect.subject}: {_value(data['payload'])}"
    if isinstance(effect, Spawn):
        reply = f" -> {effect.reply_to}" if effect.reply_to else ""
        return f"spawn {effect.specialist} {effect.child_id}{reply}: {effect.context!r}"
    if isinstance(effect, Suspend):
        return f"suspend until {data['wake_at']}: {effect.resume_context!r}"
    if isinstance(effect, Await):
        return f"await {effect.mode} of {', '.join(effect.handles)} until {data['deadline']}"
    if isinstance(effect, HttpCall):
        return f"http {effect.request.method} {effect.request.url} ({effect.handle})"
    if isinstance(effect, ModelCall):
        r = effect.request
        return f"model {r.model}: {len(r.messages)} messages, {len(r.tools)} tools ({effect.handle})"
    if isinstance(effect, SignalSend):
        return f"signal {effect.name} to {effect.instance_id}: {_value(data['data'])}"
    assert isinstance(effect, RepliesConsumed)
    return f"read {len(effect.seqs)} results"


def render_outcome(outcome: Outcome, *, console: Console = stdout_console) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    table.add_row("status", Text(outcome.status.value, style=_STATUS_STYLE[outcome.status]))
    if outcome.result is not None:
        table.add_row("result", inert(_value(to_tagged(outcome.result))))
    if outcome.failure is not None:
        table.add_row("failure", inert(outcome.failure))
    if outcome.error is not None:
        table.add_row("error", inert(f"{outcome.error.kind.value}: {outcome.error.message}", "red"))
    verdict = "committed" if outcome.committable else "discarded"
    if outcome.effects:
        lines = "\n".join(_effect_line(e) for e in outcome.effects)
        table.add_row(f"effects ({verdict})", inert(lines))
    else:
        table.add_row("effects", "none")
    memory = (
        f"{outcome.peak_memory_bytes:,} bytes peak"
        if outcome.peak_memory_bytes is not None
        else "not measured"
    )
    table.add_row(
        "cost",
        f"{outcome.fuel_used:,} fuel · {outcome.wall_time_s * 1000:.2f} ms · {outcome.host_calls} host calls"
        f" · memory {memory}",
    )
    console.print(table)
    if outcome.logs or outcome.log_bytes_dropped:
        console.print(Text("logs", style="dim"))
        for line in outcome.logs:
            style = {"error": "red", "warn": "yellow", "stderr": "magenta", "debug": "dim"}.get(
                line.level, ""
            )
            console.print(inert(f"  [{line.level}] {line.message}", style))
        if outcome.log_bytes_dropped:
            console.print(
                Text(f"  … {outcome.log_bytes_dropped:,} log bytes dropped (max_log_bytes)", style="dim")
            )


# --- stored records (journal, results, dead letters) ---------------------------------------------

_STATE_STYLE = {
    "queued": "dim",
    "running": "bold blue",
    "suspended": "cyan",
    "finished": "green",
    "failed": "yellow",
    "retrying": "yellow",
    "dead": "bold red",
    "cancelled": "dim",
}
_LEVEL_STYLE = {"error": "red", "warn": "yellow", "stderr": "magenta", "debug": "dim"}


def record_json(record: JournalRecord | TreeNode | InstanceResult | ModelCallRecord) -> dict[str, Any]:
    """A stored record for --json: its wire fields, bytes as tagged payloads, times with ISO twins."""
    return _jsonable(record.to_doc())


def _jsonable(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, bytes):
            out[key] = to_tagged(value)
        elif isinstance(value, dict):
            out[key] = _jsonable(value)
        elif isinstance(value, list):
            out[key] = [_jsonable(v) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
        if key.endswith("_ms") and isinstance(value, int) and value > 10**12:
            out[key.removesuffix("_ms") + "_at" if not key.endswith("at_ms") else key[:-3]] = iso_ms(value)
    return out


def describe(record: JournalRecord | None) -> Text:
    """An instance's state in a few words: ``suspended until ...``, ``dead — why``."""
    if record is None:
        return Text("unknown", style="dim")
    text = Text(record.state.value, style=_STATE_STYLE.get(record.state.value, ""))
    if record.awaiting:
        shown = ", ".join(record.awaiting[:4]) + (
            f" +{len(record.awaiting) - 4}" if len(record.awaiting) > 4 else ""
        )
        text.append(inert(f", awaiting {record.await_mode} of {shown} since {iso_ms(record.updated_ms)}"))
    if record.wake_at_ms:
        text.append(f" {'deadline' if record.awaiting else 'until'} {iso_ms(record.wake_at_ms)}")
    if record.error:
        text.append(inert(f" — {record.error}", "dim"))
    return text


def tree_view(node: TreeNode, tree: Tree | None = None) -> Tree:
    specialist = node.record.specialist if node.record else "?"
    label = inert(f"{node.id} ", "bold").append(inert(f"{specialist} ")).append(describe(node.record))
    if node.tree_spend.calls:
        label.append(inert(f"\n  model: {node.own_spend}", "magenta"))
        if node.tree_spend != node.own_spend:
            label.append(inert(f"\n  with its tree: {node.tree_spend}", "magenta"))
    branch = Tree(label) if tree is None else tree.add(label)
    for child in node.children:
        tree_view(child, branch)
    return branch


def status_table(records: list[JournalRecord]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for column in ("instance", "specialist", "state", "updated", "parent"):
        table.add_column(column)
    for record in records:
        table.add_row(
            inert(record.id),
            inert(record.specialist),
            describe(record),
            iso_ms(record.updated_ms) if record.updated_ms else "",
            inert(record.lineage.parent or ""),
        )
    return table


def log_record_view(record: JournalRecord) -> Group:
    """One invocation as ``dagr logs`` prints it: when, attempt, state, its lines, its error."""
    when = iso_ms(record.updated_ms) if record.updated_ms else ""
    parts: list[Text] = [inert(f"{when} {record.id[:12]} #{record.attempt} {record.state.value}", "dim")]
    invocation = record.invocation
    for line in invocation.lines if invocation else ():
        parts.append(inert(f"  [{line.level}] {line.message}", _LEVEL_STYLE.get(line.level, "")))
    if record.error:
        parts.append(inert(f"  error: {record.error}", "red"))
    if invocation and invocation.dropped_bytes:
        parts.append(Text(f"  … {invocation.dropped_bytes} log bytes dropped", style="dim"))
    return Group(*parts)


def model_call_view(call: ModelCallRecord) -> Text:
    """One model call as ``dagr logs`` prints it: alias, model, tokens, cost, latency, finish."""
    when = iso_ms(call.at_ms) if call.at_ms else ""
    model = call.response_model or call.request_model or "?"
    head = (
        f"{when} {call.instance[:12]} model {call.alias} -> {call.provider}/{model}: "
        f"{call.input_tokens:,} in / {call.output_tokens:,} out tokens, ${call.cost_usd:.6f}, "
        f"{call.duration_s * 1000:.0f} ms"
    )
    if call.error_type:
        text = inert(f"{head}, {call.error_type}: {call.error}", "red")
    else:
        text = inert(f"{head}, {call.finish_reason}", "magenta")
    for message in call.input_messages or ():
        text.append(inert(f"\n  > {message.get('role')}: {_parts_text(message)}", "dim"))
    for message in call.output_messages or ():
        text.append(inert(f"\n  < {message.get('role')}: {_parts_text(message)}", "dim"))
    return text


def _parts_text(message: dict[str, Any]) -> str:
    shown = []
    for part in message.get("parts") or ():
        if part.get("type") == "text":
            shown.append(str(part.get("content", "")))
        elif part.get("type") == "tool_call":
            shown.append(f"{part.get('name')}({part.get('arguments')})")
        elif part.get("type") == "tool_call_response":
            shown.append(f"[result {part.get('id')}] {part.get('response')}")
    text = " ".join(shown)
    return text if len(text) <= 400 else text[:400] + "…"


def dead_letter_row(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as a row of ``dagr dead-letters`` (and its --json)."""
    task = (decode_map(letter.task) or {}) if letter.task is not None else {}
    return {
        "task": letter.task_id,
        "specialist": letter.specialist,
        "instance": task.get("instance"),
        "attempts": letter.attempts,
        "kind": letter.kind,
        "error": letter.error,
        "at": iso_ms(letter.at_ms) if letter.at_ms else None,
        "seq": letter.seq,
    }
