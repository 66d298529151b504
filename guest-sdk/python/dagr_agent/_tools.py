"""``ToolAgent``: a model with tools, run as a durable loop in which each model turn is one invocation.

Nothing is alive while the model thinks or a tool's answer is pending::

    on_start ── ask ──▶ await the model call ──▶ on_resumed: the answer
                  ▲                                 │ no tool calls: finish ("answer")
                  │                                 │ tool calls: run each
                  │                                 ▼
                  └──── all answered ◀── text now; handles (spawn, fetch) awaited together;
                        (on_resumed,          a wait suspends (on_wake)
                         on_wake)

The transcript and the loop's counters live in instance state (``loop.messages``, ``loop``), so a
host may die between any two turns and another one carries on. A tool's failure is a tool message
the model can correct (an unknown name, arguments that are not JSON or do not fit, a tool that
raised); only a failed model call ends the loop early, with ``stopped`` saying why. A model turn
that does not answer within ``turn_timeout_s`` is awaited once more (the same call: asking again
would pay twice), then the loop stops with ``stopped="timeout"``.

Tool schemas are generated from type hints and docstrings when the subclass is defined: that is
when componentize-py builds the component, so the run time does no introspection at all.
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn

from ._agent import Agent
from ._await import Handle, Result, Resumed
from ._context import Context
from ._errors import Conflict, Fail, HostError, Invalid, Unavailable

__all__ = ["ToolAgent", "tool_definition"]

#: Instance-state keys. ``loop.memory`` is the remember/recall tools' notebook.
MESSAGES_KEY = "loop.messages"
LOOP_KEY = "loop"
MEMORY_KEY = "loop.memory"

#: Resume contexts, for the logs and `dagr status`: the loop itself steers by its state, since an
#: operator may change a resume context (`dagr suspend --resume-context`).
ASK, TOOLS, WAIT = "tool-agent:model", "tool-agent:tools", "tool-agent:wait"

#: The built-in dagr tools a subclass may offer (``dagr_tools``), by tool name.
DAGR_TOOLS = ("spawn", "fetch", "publish", "remember", "recall", "wait", "wait_until")

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what the host accepts (dagr_wasm.sandbox)
_CHOICES = ("auto", "none", "required")
_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_ARGS_HEADER = re.compile(r"(?:Args|Arguments|Parameters):\s*")
_ARG_LINE = re.compile(r"(\w+)(?:\s*\([^)]*\))?\s*:\s*(.*)")
_PY_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
    "null": type(None),
}


# --- tools: schemas from type hints ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call, with the JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    #: Parameters the loop fills in, not the model: those typed ``Context`` get the invocation's
    #: context, those typed ``ToolAgent`` (or a subclass) the agent.
    injected: tuple[tuple[str, str], ...] = ()

    def definition(self) -> dict[str, Any]:
        """As ``ctx.model.chat(tools=[...])`` takes it."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


def tool_definition(fn: Callable[..., Any], *, name: str | None = None) -> dict[str, Any]:
    """``{"name", "description", "parameters"}`` for ``fn``, for ``ctx.model.chat(tools=...)``.

    The description is the docstring's first paragraph; parameter descriptions come from its
    ``Args:`` section or ``Annotated[T, "text"]``. Types: ``str``, ``int``, ``float``, ``bool``,
    ``list[T]``, ``dict[str, T]``, ``Literal[...]`` (an enum), ``T | None``; a parameter with a
    default is not required. Raises ``TypeError`` for anything it cannot describe.
    """
    return _tool(fn, name=name).definition()


def _tool(fn: Callable[..., Any], *, name: str | None = None) -> Tool:
    name = name or str(getattr(fn, "__name__", ""))
    if not callable(fn) or not _TOOL_NAME.fullmatch(name):
        raise TypeError(f"a tool is a function named with 1-64 of A-Z a-z 0-9 _ -, not {fn!r}")
    doc = inspect.getdoc(fn)
    if not doc:
        raise TypeError(f"tool {name}: give it a docstring; its first paragraph is what the model reads")
    description, arg_docs = _parse_doc(doc)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # a name in an annotation that does not resolve
        raise TypeError(f"tool {name}: cannot read its type hints ({exc})") from exc
    properties: dict[str, Any] = {}
    required: list[str] = []
    injected: list[tuple[str, str]] = []
    for param in inspect.signature(fn).parameters.values():
        where = f"tool {name}, parameter {param.name}"
        if param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{where}: tools take named parameters only (no /, *args or **kwargs)")
        if param.name not in hints:
            raise TypeError(f"{where}: give it a type hint; the model's JSON schema is made from it")
        hint = hints[param.name]
        if hint is Context:
            injected.append((param.name, "ctx"))
            continue
        if isinstance(hint, type) and issubclass(hint, ToolAgent):
            injected.append((param.name, "agent"))
            continue
        schema = _schema_of(hint, where)
        if param.name in arg_docs and "description" not in schema:
            schema["description"] = arg_docs[param.name]
        properties[param.name] = schema
        if param.default is param.empty:
            required.append(param.name)
    parameters = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return Tool(name, description, parameters, fn, tuple(injected))


def _parse_doc(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph on one line, and ``{name: text}`` from an ``Args:`` section."""
    description = " ".join(doc.split("\n\n", 1)[0].split())
    lines = doc.splitlines()
    start = next((i for i, line in enumerate(lines) if _ARGS_HEADER.fullmatch(line.strip())), None)
    args: dict[str, str] = {}
    if start is None:
        return description, args
    indent, current = 0, ""
    for line in lines[start + 1 :]:
        depth = len(line) - len(line.lstrip())
        if not line.strip() or depth == 0:
            break  # the section ends at a blank or unindented line
        indent = indent or depth
        matched = _ARG_LINE.fullmatch(line.strip())
        if depth == indent and matched:
            current = matched.group(1)
            args[current] = matched.group(2).strip()
        elif current:  # a deeper line continues the argument above
            args[current] = f"{args[current]} {line.strip()}"
    return description, args


def _schema_of(hint: Any, where: str) -> dict[str, Any]:
    """The JSON schema of one parameter's type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        notes = " ".join(a for a in args[1:] if isinstance(a, str))
        inner = _schema_of(args[0], where)
        return {**inner, "description": notes} if notes else inner
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    if hint is typing.Any:
        return {}
    if origin is typing.Literal:
        kinds = {type(a) for a in args}
        if not kinds <= set(_JSON_TYPES):
            raise TypeError(f"{where}: Literal values must be str, int, float or bool")
        schema: dict[str, Any] = {"enum": list(args)}
        if len(kinds) == 1:
            schema["type"] = _JSON_TYPES[kinds.pop()]
        return schema
    if origin in (typing.Union, types.UnionType):
        options = [_schema_of(a, where) for a in args if a is not type(None)]
        if type(None) in args:
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if hint is list or origin in (list, collections.abc.Sequence):
        return {"type": "array", "items": _schema_of(args[0], where)} if args else {"type": "array"}
    if hint is dict or origin in (dict, collections.abc.Mapping):
        if not args:
            return {"type": "object"}
        if args[0] is not str:
            raise TypeError(f"{where}: JSON object keys are strings; use dict[str, ...]")
        return {"type": "object", "additionalProperties": _schema_of(args[1], where)}
    raise TypeError(
        f"{where}: cannot describe {hint!r} in JSON; use str, int, float, bool, list[...], "
        "dict[str, ...], Literal[...] or X | None"
    )


def _problem(schema: dict[str, Any], value: Any, where: str) -> str | None:
    """What is wrong with ``value`` for ``schema`` (the subset ``_schema_of`` makes), or None."""
    if "anyOf" in schema:
        problems = [_problem(option, value, where) for option in schema["anyOf"]]
        if None in problems:
            return None
        if value is not None and len(problems) == 2 and {"type": "null"} in schema["anyOf"]:
            return next(p for o, p in zip(schema["anyOf"], problems, strict=True) if o != {"type": "null"})
        return f"{where} should be {' or '.join(_what(o) for o in schema['anyOf'])}, not {_short_json(value)}"
    if "enum" in schema and not any(type(value) is type(v) and value == v for v in schema["enum"]):
        return f"{where} must be one of {json.dumps(schema['enum'])}, not {_short_json(value)}"
    kind = schema.get("type")
    if kind is not None and not _is_json_type(kind, value):
        return f"{where} should be {_what(schema)}, not {_short_json(value)}"
    if kind == "array" and "items" in schema:
        for i, item in enumerate(value):
            if problem := _problem(schema["items"], item, f"{where}[{i}]"):
                return problem
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        missing = [n for n in schema.get("required", ()) if n not in value]
        if missing:
            return f"{where} lack {', '.join(missing)}"
        extra = schema.get("additionalProperties", True)
        if extra is False and (unknown := [k for k in value if k not in properties]):
            known = ", ".join(properties) or "none"
            return f"{where} have unknown {', '.join(unknown)} (the parameters: {known})"
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None and (problem := _problem(sub, item, key)):
                return problem
    return None


def _is_json_type(kind: str, value: Any) -> bool:
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False  # True is an int to Python, not to JSON
    return isinstance(value, _PY_TYPES.get(kind, object))


def _what(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return f"one of {json.dumps(schema['enum'])}"
    kind = schema.get("type", "any value")
    return {"array": "a list", "object": "an object", "null": "null", "integer": "an integer"}.get(
        kind, f"a {kind}"
    )


def _short_json(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


# --- the built-in dagr tools: plain functions too, the agent and the context injected ------------


@dataclass(frozen=True, slots=True)
class _Wait:
    """What the wait tools return: the loop suspends for it after the turn's other calls."""

    after_s: float | None = None
    at: str | None = None  # ISO 8601, UTC


def _spawn(agent: ToolAgent, ctx: Context, specialist: str, task: str) -> Handle | str:
    """Ask a specialist agent to do a task; its answer comes back as this tool's result.

    Args:
        specialist: which specialist to ask.
        task: the task for it, in plain words.
    """
    loop = agent._loop
    for earlier in loop.spawned:
        if earlier["specialist"] != specialist or earlier["task"] != task:
            continue
        # A small model repeats itself: give it the answer it has rather than pay twice. A child
        # that failed or never answered is asked again.
        if earlier.get("ok"):
            return "(asked before; the same answer) " + _child_text(True, earlier["result"], None)
        if earlier["turn"] == loop.turns:
            return "error: already asked in this turn; its answer comes as the result of that call"
    child = ctx.spawn(specialist, task)
    loop.spawned.append({"specialist": specialist, "task": task, "child_id": str(child), "turn": loop.turns})
    ctx.log.info(f"spawned {specialist} {child}: {task[:200]!r}")
    return child


def _fetch(ctx: Context, url: str) -> Handle:
    """Fetch a web page or API with GET; the result is the status and the text of the response.

    Args:
        url: the full URL (only those the agent is granted work).
    """
    return ctx.http.get(url)


def _publish(ctx: Context, subject: str, text: str) -> str:
    """Publish a message to a subject other agents or people listen on.

    Args:
        subject: where to publish.
        text: the message.
    """
    ctx.publish(subject, text)
    return f"published to {subject}"


def _remember(ctx: Context, key: str, value: str) -> str:
    """Keep a note under a key for later turns; recall gives it back.

    Args:
        key: a short name for the note.
        value: the note.
    """
    memory: dict[str, str] = ctx.state.get(MEMORY_KEY, {})
    memory[key] = value
    ctx.state.put(MEMORY_KEY, memory)
    return f"remembered {key}"


def _recall(ctx: Context, key: str) -> str:
    """Read the note kept under a key with remember.

    Args:
        key: the note's name.
    """
    memory: dict[str, str] = ctx.state.get(MEMORY_KEY, {})
    if key in memory:
        return memory[key]
    return f"error: no note named {key!r}; the notes: {', '.join(sorted(memory)) or 'none'}"


def _wait(seconds: int) -> _Wait:
    """Pause for a number of seconds, then carry on.

    Args:
        seconds: how long to wait.
    """
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    return _Wait(after_s=float(seconds))


def _wait_until(time: str) -> _Wait:
    """Pause until a moment, then carry on.

    Args:
        time: an ISO 8601 date and time, e.g. 2026-03-01T09:00:00Z (UTC if no zone is given).
    """
    at = datetime.fromisoformat(time)
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return _Wait(at=at.astimezone(UTC).isoformat())


_BUILTIN: dict[str, Callable[..., Any]] = {
    "spawn": _spawn,
    "fetch": _fetch,
    "publish": _publish,
    "remember": _remember,
    "recall": _recall,
    "wait": _wait,
    "wait_until": _wait_until,
}


def _child_text(ok: bool, value: Any, error: str | None) -> str:
    return (
        json.dumps(value, default=str, ensure_ascii=False) if ok else f"error: {error or 'the child failed'}"
    )


# --- the loop ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Loop:
    """The loop's state besides the transcript (``LOOP_KEY``)."""

    turns: int = 0  # model calls made
    tool_calls: int = 0  # tool calls the model made
    usage: list[int] = field(default_factory=lambda: [0, 0])  # input, output tokens
    model_call: str | None = None  # the handle of the model turn being awaited
    rewaits: int = 0  # how often that turn's await timed out
    #: This turn's tool calls, in order: {"id", "content"} once answered, else "handle" or "wait".
    calls: list[dict[str, Any]] = field(default_factory=list)
    #: Every spawn: {"specialist", "task", "child_id", "turn"}, and once it answered "ok" and
    #: "result" or "error" (a child that never answered has no "ok").
    spawned: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None  # set once the loop has ended

    @classmethod
    def load(cls, ctx: Context) -> _Loop:
        doc: dict[str, Any] = ctx.state.get(LOOP_KEY) or {}
        return cls(**{f.name: doc[f.name] for f in fields(cls) if f.name in doc})


class ToolAgent(Agent):
    """An agent whose decisions a model makes, one turn per invocation, with tools.

    Set class attributes; the system prompt is the specialist's config text (``system_prompt``)
    and the start context the first user message::

        def price(ticker: Literal["GME", "AMC"], days: int = 30) -> dict[str, float]:
            \"\"\"The last close and the change over some days.\"\"\"
            ...

        class Analyst(dagr.ToolAgent):
            tools = (price,)
            dagr_tools = ("spawn",)
            specialists = ("stock-analyst",)

        Handler = dagr.handler(Analyst)

    The result (also published to ``report_subject``): ``{"answer", "stopped", "reason", "turns",
    "tool_calls", "usage": [input, output], "spawned"}``. ``stopped`` is ``"answer"``,
    ``"max-iterations"``, ``"timeout"`` or why the model call failed (``"quota-exceeded"``,
    ``"unavailable"``, ``"denied"``, ``"invalid"``).
    """

    #: The model alias (``grants.models``).
    model: ClassVar[str] = "fast"
    #: Plain functions with type hints and a docstring.
    tools: ClassVar[Sequence[Callable[..., Any]]] = ()
    #: Built-in tools to offer, by name: spawn, fetch, publish, remember, recall, wait, wait_until.
    dagr_tools: ClassVar[Sequence[str]] = ()
    #: The specialists the spawn tool may name (an enum: constrained decoding names no other).
    specialists: ClassVar[Sequence[str]] = ()
    #: The subjects the publish tool may name; empty: any (the manifest's grants still decide).
    publish_subjects: ClassVar[Sequence[str]] = ()
    #: Model turns at most; the last one is asked with ``tool_choice="none"``.
    max_iterations: ClassVar[int] = 8
    max_output_tokens: ClassVar[int | None] = None
    temperature: ClassVar[float | None] = None
    #: The deadline of each await: of a model turn (awaited once more if it passes, see
    #: ``_on_model_answer``) and of a turn's tool answers. At most the manifest's max_suspend_s.
    turn_timeout_s: ClassVar[float] = 120.0
    #: ``tool_choice`` of the first turn: "auto", "required" or a tool's name.
    first_tool_choice: ClassVar[str] = "auto"
    #: Where to publish the result when the loop ends (needs ``grants.publish``).
    report_subject: ClassVar[str | None] = None
    #: Tool results longer than this are cut (a fetched page would fill the context otherwise).
    max_tool_result_chars: ClassVar[int] = 4000

    _toolbox: ClassVar[dict[str, Tool]] = {}
    _definitions: ClassVar[list[dict[str, Any]]] = []
    _loop: _Loop

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._toolbox = _toolbox(cls)
        cls._definitions = [t.definition() for t in cls._toolbox.values()]

    # -- override points ----------------------------------------------------------------------

    def system_prompt(self, ctx: Context) -> str:
        """The system message; the specialist's config text (none when it is blank)."""
        return ctx.config

    def on_answer(self, ctx: Context, result: dict[str, Any]) -> object:
        """The loop ended (``result["stopped"]`` says how): publish the result to
        ``report_subject`` and return it (the invocation's result)."""
        if self.report_subject is not None:
            try:
                ctx.publish(self.report_subject, result)
            except (Conflict, Unavailable):
                raise
            except HostError as refused:
                # Misconfigured grants: keep the paid-for answer as the result, say why it is not out.
                ctx.log.error(f"the result is not published: {refused}")
        return result

    # -- events -------------------------------------------------------------------------------

    def on_start(self, ctx: Context, context: str) -> object:
        self._loop = _Loop()
        system = self.system_prompt(ctx)
        messages = [{"role": "system", "content": system}] if system.strip() else []
        messages.append({"role": "user", "content": context})
        return self._ask(ctx, messages)

    def on_resumed(self, ctx: Context, resumed: Resumed) -> object:
        self._loop = _Loop.load(ctx)
        if self._loop.result is not None:
            return self._loop.result
        messages: list[dict[str, Any]] = ctx.state.get(MESSAGES_KEY, [])
        if not messages:
            raise Fail(f"{type(self).__name__} resumed without a conversation: start it first")
        self._note_children(resumed.results)
        if self._loop.model_call is not None:
            return self._on_model_answer(ctx, messages, resumed)
        for call in self._loop.calls:
            if call.get("handle") is not None:
                call["content"] = self._answer_text(resumed.get(call.pop("handle")))
        return self._carry_on(ctx, messages)

    def on_wake(self, ctx: Context, resume_context: str) -> object:
        self._loop = _Loop.load(ctx)
        if self._loop.result is not None:
            return self._loop.result
        waits = [call for call in self._loop.calls if call.get("wait") is not None]
        if not waits:
            return super().on_wake(ctx, resume_context)
        for call in waits:
            wait = call.pop("wait")
            call["content"] = (
                f"waited {wait['after_s']:g} s" if wait.get("after_s") else f"it is now {wait['at']}"
            )
        return self._carry_on(ctx, ctx.state.get(MESSAGES_KEY, []))

    # -- one model turn -----------------------------------------------------------------------

    def _ask(self, ctx: Context, messages: list[dict[str, Any]]) -> object:
        loop = self._loop
        turn = loop.turns + 1
        # The last turn may not call tools, so the model must answer with what it has.
        choice = "none" if turn >= self.max_iterations else self.first_tool_choice if turn == 1 else "auto"
        try:
            handle = ctx.model.chat(
                messages,
                model=self.model,
                tools=self._definitions,
                tool_choice=choice,
                max_output_tokens=self.max_output_tokens,
                temperature=self.temperature,
            )
        except (Conflict, Unavailable):
            raise  # the host's trouble: trap, and it runs this invocation again
        except HostError as refused:
            return self._finish(ctx, messages, refused.kind, f"the model call was refused: {refused.message}")
        loop.turns, loop.model_call, loop.rewaits, loop.calls = turn, str(handle), 0, []
        self._save(ctx, messages)
        ctx.log.info(f"turn {turn} of {self.max_iterations}: asked {self.model} (tool_choice {choice})")
        self._await(ctx, [handle], ASK)

    def _on_model_answer(self, ctx: Context, messages: list[dict[str, Any]], resumed: Resumed) -> object:
        loop = self._loop
        assert loop.model_call is not None
        result = resumed.get(loop.model_call)
        if result is None:
            # Timed out. Await the same call once more rather than ask again: the host may still
            # be retrying a rate-limited provider, and a new call would be paid for twice.
            if loop.rewaits < 1:
                loop.rewaits += 1
                self._save(ctx, messages)
                ctx.log.warn(f"no answer from the model in {self.turn_timeout_s:g} s: waiting once more")
                self._await(ctx, [loop.model_call], ASK)
            waited = self.turn_timeout_s * (loop.rewaits + 1)
            return self._finish(ctx, messages, "timeout", f"the model did not answer within {waited:g} s")
        loop.model_call = None
        chat = result.chat
        if chat is None:
            kind = result.error_kind or "error"
            return self._finish(ctx, messages, kind, f"the model call failed ({kind}): {result.error}")
        loop.usage = [loop.usage[0] + chat.input_tokens, loop.usage[1] + chat.output_tokens]
        # Ids the host or a small model left empty or repeated would not pair calls with answers.
        ids: set[str] = set()
        calls = []
        for i, call in enumerate(chat.tool_calls):
            call_id = call.id if call.id and call.id not in ids else f"call-{loop.turns}-{i}"
            ids.add(call_id)
            calls.append({"id": call_id, "name": call.name, "arguments": call.arguments_json})
        message: dict[str, Any] = {"role": "assistant", "content": chat.text}
        if calls:
            message["tool_calls"] = calls
        messages.append(message)
        if not calls:
            return self._finish(ctx, messages, "answer", None, answer=chat.text)
        if loop.turns >= self.max_iterations:
            return self._finish(
                ctx,
                messages,
                "max-iterations",
                f"still calling tools after {loop.turns} turns (max_iterations)",
            )
        loop.tool_calls += len(calls)
        loop.calls = [self._run(ctx, call) for call in calls]
        return self._carry_on(ctx, messages)

    # -- tool calls ---------------------------------------------------------------------------

    def _run(self, ctx: Context, call: dict[str, Any]) -> dict[str, Any]:
        """Run one tool call: its answer now, or the handle or wait it stands for."""
        done = {"id": call["id"]}
        tool = self._toolbox.get(call["name"])
        if tool is None:
            known = ", ".join(self._toolbox) or "none"
            return {**done, "content": f"error: there is no tool named {call['name']!r}; the tools: {known}"}
        try:
            arguments = json.loads(call["arguments"] or "{}")
        except ValueError as exc:
            return {**done, "content": f"error: the arguments are not JSON ({exc}); send a JSON object"}
        arguments = {} if arguments is None else arguments  # what some models send for no arguments
        if problem := _problem(tool.parameters, arguments, "the arguments"):
            return {**done, "content": f"error: {problem}. Call {tool.name} again with arguments that fit."}
        for name, what in tool.injected:
            arguments[name] = ctx if what == "ctx" else self
        try:
            value = tool.fn(**arguments)
        except (Fail, Conflict, Unavailable):
            raise  # a deliberate end, or the host's trouble: not the model's to fix
        except Exception as exc:
            ctx.log.warn(f"tool {tool.name} raised {type(exc).__name__}: {exc}")
            return {**done, "content": self._cut(f"error: {type(exc).__name__}: {exc}")}
        if isinstance(value, Handle):
            return {**done, "handle": str(value)}
        if isinstance(value, _Wait):
            return {**done, "wait": asdict(value)}
        return {**done, "content": self._as_text(value)}

    def _carry_on(self, ctx: Context, messages: list[dict[str, Any]]) -> object:
        """Await what the turn's calls wait for; once all are answered, ask the next turn."""
        loop = self._loop
        handles = [call["handle"] for call in loop.calls if call.get("handle") is not None]
        waits = [call for call in loop.calls if call.get("wait") is not None]
        if waits and (handles or len(waits) > 1):
            for call in waits:
                del call["wait"]
                call["content"] = (
                    "error: wait cannot share a turn with spawn, fetch or another wait; call it alone"
                )
            waits = []
        if handles:
            self._save(ctx, messages)
            self._await(ctx, handles, TOOLS)
        if waits:
            (call,) = waits
            wait = call["wait"]
            self._save(ctx, messages)
            try:
                if wait.get("after_s") is not None:
                    ctx.suspend(after=wait["after_s"], resume_context=WAIT)
                else:
                    ctx.suspend(at=datetime.fromisoformat(wait["at"]), resume_context=WAIT)
            except (Conflict, Unavailable):
                raise
            except (HostError, ValueError) as refused:  # beyond max_suspend_s, in the past...
                del call["wait"]
                call["content"] = f"error: cannot wait: {refused}"
        messages.extend(
            {"role": "tool", "tool_call_id": c["id"], "content": c["content"]} for c in loop.calls
        )
        loop.calls = []
        return self._ask(ctx, messages)

    def _await(self, ctx: Context, handles: list[str], resume_context: str) -> NoReturn:
        try:
            ctx.await_all(handles, timeout_s=self.turn_timeout_s, resume_context=resume_context)
        except Invalid as exc:
            # Most likely turn_timeout_s beyond the manifest's max_suspend_s: no retry fixes that.
            raise Fail(
                f"cannot await {len(handles)} handle(s) for turn_timeout_s={self.turn_timeout_s:g}: "
                f"{exc.message}; make grants.max_suspend_s at least turn_timeout_s"
            ) from None

    def _note_children(self, results: Sequence[Result]) -> None:
        """Record the children's answers (late ones too) in ``spawned``."""
        by_child = {entry["child_id"]: entry for entry in self._loop.spawned}
        for result in results:
            entry = by_child.get(result.handle)
            if entry is not None and result.kind == "child":
                entry["ok"] = result.ok
                entry.update({"result": result.value} if result.ok else {"error": result.error})

    def _answer_text(self, result: Result | None) -> str:
        """What a handle resolved to, as the tool message the model reads."""
        if result is None:
            return f"error: no answer within {self.turn_timeout_s:g} s"
        if result.kind == "child":
            return self._cut(_child_text(result.ok, result.value, result.error))
        if result.response is not None:
            text = result.response.text
            cut = len(text) > self.max_tool_result_chars
            body = text[: self.max_tool_result_chars]
            return json.dumps(
                {"status": result.response.status, "text": body, "truncated": cut}, ensure_ascii=False
            )
        if not result.ok:
            return f"error: {result.error_kind}: {result.error}"
        if result.chat is not None:
            return self._cut(result.chat.text)
        return self._as_text(result.value)

    def _as_text(self, value: object) -> str:
        text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
        return self._cut(text)

    def _cut(self, text: str) -> str:
        limit = self.max_tool_result_chars
        return text if len(text) <= limit else f"{text[:limit]}... (cut: {len(text) - limit} more characters)"

    # -- the end ------------------------------------------------------------------------------

    def _finish(
        self,
        ctx: Context,
        messages: list[dict[str, Any]],
        stopped: str,
        reason: str | None,
        *,
        answer: str | None = None,
    ) -> object:
        """End the loop; ``answer`` is the final text, else (stopped early) the last text so far."""
        loop = self._loop
        if answer is None:
            said = (m["content"] for m in reversed(messages) if m["role"] == "assistant" and m["content"])
            answer = next(said, "")
        loop.model_call, loop.calls = None, []
        loop.result = {
            "answer": answer,
            "stopped": stopped,
            "reason": reason,
            "turns": loop.turns,
            "tool_calls": loop.tool_calls,
            "usage": list(loop.usage),
            "spawned": loop.spawned,
        }
        self._save(ctx, messages)
        log = ctx.log.info if stopped == "answer" else ctx.log.warn
        log(f"done after {loop.turns} turns: {stopped}" + (f" ({reason})" if reason else ""))
        return self.on_answer(ctx, loop.result)

    def _save(self, ctx: Context, messages: list[dict[str, Any]]) -> None:
        ctx.state.put(MESSAGES_KEY, messages)
        ctx.state.put(LOOP_KEY, asdict(self._loop))


def _toolbox(cls: type[ToolAgent]) -> dict[str, Tool]:
    """The tools of ``cls`` by name, checked: run when the subclass is defined (at build time)."""
    unknown = [name for name in cls.dagr_tools if name not in _BUILTIN]
    if unknown:
        raise TypeError(
            f"{cls.__name__}.dagr_tools: no built-in tool {', '.join(unknown)}; "
            f"they are {', '.join(DAGR_TOOLS)}"
        )
    if ("spawn" in cls.dagr_tools) != bool(cls.specialists):
        raise TypeError(
            f"{cls.__name__}: the spawn tool needs specialists, and specialists need 'spawn' in dagr_tools"
        )
    # The names the model may pick from, as an enum: constrained decoding can name no other.
    enums = {"spawn": ("specialist", cls.specialists), "publish": ("subject", cls.publish_subjects)}
    box: dict[str, Tool] = {}
    for name in cls.dagr_tools:
        tool = _tool(_BUILTIN[name], name=name)
        param, values = enums.get(name, ("", ()))
        if values:
            properties = {**tool.parameters["properties"]}
            properties[param] = {**properties[param], "enum": list(values)}
            tool = replace(tool, parameters={**tool.parameters, "properties": properties})
        box[name] = tool
    for fn in cls.tools:
        tool = _tool(fn)
        if tool.name in box:
            raise TypeError(f"{cls.__name__}: two tools named {tool.name}")
        box[tool.name] = tool
    choice = cls.first_tool_choice
    if choice not in _CHOICES and choice not in box:
        raise TypeError(
            f"{cls.__name__}.first_tool_choice {choice!r}: use {', '.join(_CHOICES)} or a tool's name"
        )
    if choice != "auto" and choice != "none" and not box:
        raise TypeError(f"{cls.__name__}.first_tool_choice {choice!r} needs tools")
    if cls.max_iterations < 1 or cls.turn_timeout_s <= 0:
        raise TypeError(f"{cls.__name__}: max_iterations must be at least 1 and turn_timeout_s positive")
    return box
