"""Fixtures of the adversarial suite; the helpers themselves live in ``arena.py`` (a module with a
name of its own: test files import it, and ``conftest`` names collide between folders)."""

from arena import arena, arena_server, fresh_admin

__all__ = ["arena", "arena_server", "fresh_admin"]
