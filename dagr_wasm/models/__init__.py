"""Model providers for agents' ``model.chat`` calls, on the host: aliases, keys, wire formats.

Neither NATS nor wasmtime here: the host hands a call's ``ChatRequest`` to ``ModelRouter`` and
stores the ``ModelAnswer``'s resolution; ``dagr run`` does the same in process.
"""

from ._config import DEFAULT_ALIASES, ModelAlias, ModelsConfig, default_models, load_models
from ._local import DEFAULT_LOCAL_MODEL
from ._router import ModelAnswer, ModelRouter

__all__ = [
    "DEFAULT_ALIASES",
    "DEFAULT_LOCAL_MODEL",
    "ModelAlias",
    "ModelAnswer",
    "ModelRouter",
    "ModelsConfig",
    "default_models",
    "load_models",
]
