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

from ._host import CONTRACT_INTERFACES, HANDLERS
from ._types import instance_shape
from ._wasi import WASI_INTERFACES, WASI_VERSION, Interface

__all__ = ["check_component", "contract_version"]

_NAME = re.compile(r"(?P<base>[a-z][a-z0-9-]*:[a-z][a-z0-9-]*/[a-z][a-z0-9-]*)@(?P<version>[0-9A-Za-z.+-]+)")
_WASI_PATCH = re.compile(r"0\.2\.(\d+)")
_MAX_SHOWN = 240
_CONTRACT_BASES = frozenset(base for interfaces in CONTRACT_INTERFACES.values() for base in interfaces)


def contract_version(component: Component, engine: Engine) -> str | None:
    """The contract version whose handler ``component`` exports (None: none, or several)."""
    exports = component.type.exports(engine)
    found = [version for version, (interface, _) in HANDLERS.items() if interface in exports]
    return found[0] if len(found) == 1 else None


def check_component(component: Component, engine: Engine) -> list[str]:
    """Why ``component`` cannot run on this host; an empty list when it can."""
    component_type = component.type
    exports = component_type.exports(engine)
    version = contract_version(component, engine)
    if version is None:
        wanted = " or ".join(interface for interface, _ in HANDLERS.values())
        listed = ", ".join(sorted(exports)) or "nothing"
        return [f"it does not export exactly one of {wanted} (it exports: {listed})"]
    problems = [
        problem
        for name, extern in component_type.imports(engine).items()
        if (problem := _check_import(name, extern.ty, engine, version)) is not None
    ]
    interface, signature = HANDLERS[version]
    handler = exports[interface]
    if not isinstance(handler.ty, ComponentInstanceType):
        problems.append(f"its export {interface} is not an interface instance")
    else:
        functions = instance_shape(handler.ty, engine).functions
        handle = functions.get("handle")
        if handle is None:
            problems.append(f"{interface} has no `handle` function")
        elif handle != signature:
            problems.append(f"{interface}#handle is {_shown(handle)}, not the contract's {_shown(signature)}")
    return problems


def _provided(name: str, contract: str) -> tuple[Interface | None, str]:
    """The interface the host provides for import ``name``, or None and why not."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None, f"it imports {name[:80]!r}, which is not a versioned interface name"
    base, version = match["base"], match["version"]
    if base in _CONTRACT_BASES:
        # One contract per component: its imports are of the version its handler speaks.
        if version != contract:
            return None, f"it imports {name}, but it exports the handler of contract {contract}"
        provided = CONTRACT_INTERFACES[contract].get(base)
        if provided is None:
            return None, f"it imports {name}, which contract {contract} does not have"
        return provided, ""
    if base in WASI_INTERFACES:
        patch = _WASI_PATCH.fullmatch(version)
        if patch is None or int(patch[1]) > int(WASI_VERSION.rsplit(".", 1)[1]):
            return None, f"it imports {name}, but this host provides WASI 0.2.0 to {WASI_VERSION}"
        return WASI_INTERFACES[base], ""
    return None, f"it imports {name}, which a dagr host does not provide"


def _check_import(name: str, item: object, engine: Engine, contract: str) -> str | None:
    interface, why = _provided(name, contract)
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
