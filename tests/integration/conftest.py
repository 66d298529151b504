"""Fixtures of the integration suite; the helpers themselves live in ``meshkit.py`` (a module with
a name of its own: test files import it, and ``conftest`` names collide between folders)."""

from meshkit import deployed, host_process, mesh, own_server, run_host

__all__ = ["deployed", "host_process", "mesh", "own_server", "run_host"]
