"""``python -m dagr_wasm`` is ``dagr``."""

from .cli import entrypoint

entrypoint()
