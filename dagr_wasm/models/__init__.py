"""Model providers for agents' ``model.chat`` calls, on the host: aliases, keys, wire formats.

Neither NATS nor wasmtime here: the host hands a call's ``ChatRequest`` to ``ModelRouter`` and
stores the ``ModelAnswer``'s resolution; ``dagr run`` does the same in process.
"""

from ._config import ModelAlias, ModelsConfig, load_models
from ._router import ModelAnswer, ModelRouter

__all__ = ["ModelAlias", "ModelAnswer", "ModelRouter", "ModelsConfig", "load_models"]
