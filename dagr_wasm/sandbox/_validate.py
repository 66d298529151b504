"""What a component must be to run here: its imports exactly what the host provides, its export exact.

The linker takes host functions untyped, so wasmtime would link an import of the right name and
any type. ``check_component`` closes that: every imported instance must be one the host provides
(dagr's contract at its exact version; WASI 0.2.x up to the host's), declare only resources the
host defines there, and import only functions the host implements, each with exactly the host's
signature (``_types`` text). The handler export must have exactly the contract's signature, so a
handler of another type is refused here instead of failing inside ``Sandbox.run``.
"""

from __future__ import annotations

import re

from wasmtime import Engine
from wasmtime.component import Component, ComponentInstanceType

from .. import CONTRACT
from ._host import CONTRACT_INTERFACES, HANDLER_INTERFACE, HANDLER_SIGNATURE
from ._types import instance_shape
from ._wasi import WASI_INTERFACES, WASI_VERSION, Interface

__all__ = ["check_component"]

_NAME = re.compile(r"(?P<base>[a-z][a-z0-9-]*:[a-z][a-z0-9-]*/[a-z][a-z0-9-]*)@(?P<version>[0-9A-Za-z.+-]+)")
_WASI_PATCH = re.compile(r"0\.2\.(\d+)")
_CONTRACT_VERSION = CONTRACT.split("@")[1]
_MAX_SHOWN = 240


def check_component(component: Component, engine: Engine) -> list[str]:
    """Why ``component`` cannot run on this host; an empty list when it can."""
    component_type = component.type
    problems = [
        problem
        for name, extern in component_type.imports(engine).items()
        if (problem := _check_import(name, extern.ty, engine)) is not None
    ]
    exports = component_type.exports(engine)
    handler = exports.get(HANDLER_INTERFACE)
    if handler is None:
        listed = ", ".join(sorted(exports)) or "nothing"
        problems.append(f"it does not export {HANDLER_INTERFACE} (it exports: {listed})")
    elif not isinstance(handler.ty, ComponentInstanceType):
        problems.append(f"its export {HANDLER_INTERFACE} is not an interface instance")
    else:
        functions = instance_shape(handler.ty, engine).functions
        handle = functions.get("handle")
        if handle is None:
            problems.append(f"{HANDLER_INTERFACE} has no `handle` function")
        elif handle != HANDLER_SIGNATURE:
            problems.append(
                f"{HANDLER_INTERFACE}#handle is {_shown(handle)}, "
                f"not the contract's {_shown(HANDLER_SIGNATURE)}"
            )
    return problems


def _provided(name: str) -> tuple[Interface | None, str]:
    """The interface the host provides for import ``name``, or None and why not."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None, f"it imports {name[:80]!r}, which is not a versioned interface name"
    base, version = match["base"], match["version"]
    if base in CONTRACT_INTERFACES:
        if version != _CONTRACT_VERSION:
            return None, f"it imports {name}, but this host provides {base}@{_CONTRACT_VERSION}"
        return CONTRACT_INTERFACES[base], ""
    if base in WASI_INTERFACES:
        patch = _WASI_PATCH.fullmatch(version)
        if patch is None or int(patch[1]) > int(WASI_VERSION.rsplit(".", 1)[1]):
            return None, f"it imports {name}, but this host provides WASI 0.2.0 to {WASI_VERSION}"
        return WASI_INTERFACES[base], ""
    return None, f"it imports {name}, which a dagr host does not provide"


def _check_import(name: str, item: object, engine: Engine) -> str | None:
    interface, why = _provided(name)
    if interface is None:
        return why
    if not isinstance(item, ComponentInstanceType):
        return f"it imports {name} as something other than an interface instance"
    shape = instance_shape(item, engine)
    if shape.other:
        return f"{name}: it declares {', '.join(sorted(shape.other))}, which the host does not provide"
    unknown = sorted(shape.resources - set(interface.resources))
    if unknown:
        return f"{name}: it declares resources {', '.join(unknown)}, which the host does not define there"
    for function, signature in shape.functions.items():
        expected = interface.functions.get(function)
        if expected is None:
            return f"{name}: it imports `{function}`, which the host does not provide"
        if signature != expected:
            return (
                f"{name}: it imports `{function}` as {_shown(signature)}, "
                f"but the host provides {_shown(expected)}"
            )
    return None


def _shown(signature: str) -> str:
    return signature if len(signature) <= _MAX_SHOWN else signature[: _MAX_SHOWN - 1] + "…"
