"""Component types as text, so a component's imports can be checked against the host's exactly.

The host defines its functions dynamically (wasmtime-py's ``add_func`` takes no type), so wasmtime
links any import of the right *name*, whatever its type: a component that declares ``enum scope``
with an extra case, or a ``string`` where the host expects a ``u64``, would link and then feed the
host values it never planned for. Every import is therefore rendered here into one canonical text
(``func(key: string) -> result<list<u8>, variant{denied(string), ...}>``) and compared with the
signature the host implements, before the component is accepted.

The rendering is structural and complete: record fields, variant and enum cases (in order, with
names), flags, options, results, tuples, lists, and resources by the name the importing instance
gives them (``own<pollable>``). Two types render equal exactly when they lift and lower the same.
"""

from __future__ import annotations

from typing import Any

from wasmtime import Engine
from wasmtime.component import (
    F32,
    F64,
    S8,
    S16,
    S32,
    S64,
    U8,
    U16,
    U32,
    U64,
    Bool,
    BorrowType,
    Char,
    ComponentInstanceType,
    EnumType,
    ErrorContext,
    FlagsType,
    FuncType,
    FutureType,
    ListType,
    OptionType,
    OwnType,
    RecordType,
    ResourceType,
    ResultType,
    StreamType,
    String,
    TupleType,
    ValType,
    VariantType,
)

__all__ = ["InstanceShape", "instance_shape", "render_func"]

_PRIMITIVES: tuple[tuple[type, str], ...] = (
    (Bool, "bool"),
    (S8, "s8"),
    (S16, "s16"),
    (S32, "s32"),
    (S64, "s64"),
    (U8, "u8"),
    (U16, "u16"),
    (U32, "u32"),
    (U64, "u64"),
    (F32, "f32"),
    (F64, "f64"),
    (Char, "char"),
    (String, "string"),
    (ErrorContext, "error-context"),
)

#: Deeper types than this are refused rather than rendered (no real interface comes close).
_MAX_DEPTH = 32


class InstanceShape:
    """The functions (name -> signature text) and resources an imported instance declares."""

    def __init__(self, functions: dict[str, str], resources: frozenset[str], other: frozenset[str]) -> None:
        self.functions = functions
        self.resources = resources
        #: Exports that are neither functions, resources nor plain types (nested components...).
        self.other = other


def instance_shape(instance: ComponentInstanceType, engine: Engine) -> InstanceShape:
    exports = instance.exports(engine)
    resources: list[tuple[str, ResourceType]] = []
    funcs: list[tuple[str, FuncType]] = []
    other: set[str] = set()
    for name, extern in exports.items():
        item = extern.ty
        if isinstance(item, ResourceType):
            resources.append((name, item))
        elif isinstance(item, FuncType):
            funcs.append((name, item))
        elif not isinstance(item, ValType):
            other.add(name)
    functions = {name: render_func(ft, resources) for name, ft in funcs}
    return InstanceShape(functions, frozenset(name for name, _ in resources), frozenset(other))


def render_func(func: FuncType, resources: list[tuple[str, ResourceType]]) -> str:
    params = ", ".join(f"{name}: {_render(ty, resources, 0)}" for name, ty in func.params)
    result = func.result
    tail = f" -> {_render(result, resources, 0)}" if result is not None else ""
    return f"func({params}){tail}"


def _render(ty: Any, resources: list[tuple[str, ResourceType]], depth: int) -> str:
    if depth > _MAX_DEPTH:
        return "<too deep>"
    for cls, name in _PRIMITIVES:
        if isinstance(ty, cls):
            return name
    inner = depth + 1

    def sub(t: Any) -> str:
        return _render(t, resources, inner)

    if isinstance(ty, ListType):
        return f"list<{sub(ty.element)}>"
    if isinstance(ty, OptionType):
        return f"option<{sub(ty.payload)}>"
    if isinstance(ty, ResultType):
        ok, err = ty.ok, ty.err
        if ok is None and err is None:
            return "result"
        return f"result<{sub(ok) if ok is not None else '_'}{', ' + sub(err) if err is not None else ''}>"
    if isinstance(ty, TupleType):
        return f"tuple<{', '.join(sub(t) for t in ty.elements)}>"
    if isinstance(ty, RecordType):
        return "record{" + ", ".join(f"{n}: {sub(t)}" for n, t in ty.fields) + "}"
    if isinstance(ty, VariantType):
        cases = (f"{n}({sub(t)})" if t is not None else n for n, t in ty.cases)
        return "variant{" + ", ".join(cases) + "}"
    if isinstance(ty, EnumType):
        return "enum{" + ", ".join(ty.names) + "}"
    if isinstance(ty, FlagsType):
        return "flags{" + ", ".join(ty.names) + "}"
    if isinstance(ty, OwnType | BorrowType):
        kind = "own" if isinstance(ty, OwnType) else "borrow"
        names = sorted(name for name, resource in resources if resource == ty.ty)
        return f"{kind}<{names[0] if names else '?'}>"
    if isinstance(ty, FutureType):
        return f"future<{sub(ty.payload)}>"
    if isinstance(ty, StreamType):
        return f"stream<{sub(ty.payload)}>"
    return f"<{type(ty).__name__}>"
