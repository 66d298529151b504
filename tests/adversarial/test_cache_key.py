"""Class 8: the compiled-cache key. A key someone else planted or can read is refused, so no one but
this host can seal an artifact it will load as native code.

Before: an existing ``host.key`` was trusted whatever its owner or mode; a planted key plus a
forged sealed artifact ran other native code for a benign digest.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import watkit

from dagr_wasm.sandbox import Sandbox, digest_of

ECHO = watkit.component("(call $ok (local.get $p1) (local.get $p2))")
OTHER = watkit.component("(call $ok (i32.const 1024) (i32.const 5))", extra=watkit.data(1024, "evil!"))


def _forge(cache: Path, key: bytes) -> None:
    """As an attacker: plant ``key``, and seal OTHER's compiled code under ECHO's digest with it."""
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "host.key").write_bytes(key)
    (cache / "host.key").chmod(0o600)  # so that the attacker's own sandbox uses it to seal
    with Sandbox(cache_dir=cache) as attacker:
        attacker.load(OTHER)
        entry = attacker.cache.entry_path(digest_of(OTHER))
        target = attacker.cache.entry_path(digest_of(ECHO))
    assert entry is not None and target is not None
    # Re-seal the OTHER artifact's body under ECHO's digest with the planted key.
    import hashlib
    import hmac

    blob = entry.read_bytes()
    header = len(b"DAGRCW1\n") + 32
    body = blob[header:]
    fingerprint = entry.parent.name
    mac = hmac.new(key, digestmod=hashlib.sha256)
    mac.update(fingerprint.encode())
    mac.update(digest_of(ECHO).encode())
    mac.update(body)
    target.write_bytes(b"DAGRCW1\n" + mac.digest() + body)
    # The forgery works against a host that trusts the key: a sanity check of the attack itself.
    with Sandbox(cache_dir=cache) as fooled:
        from dagr_wasm.invocation import Invocation, Start

        out = fooled.run(
            fooled.load(ECHO), Invocation(task_id="t", instance_id="i", specialist="s", event=Start("x"))
        )
        assert out.result == b"evil!"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o666, 0o604])
def test_a_key_others_can_read_is_refused_and_a_forged_artifact_never_runs(
    tmp_path: Path, mode: int, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    _forge(cache, b"k" * 32)
    os.chmod(cache / "host.key", mode)
    with caplog.at_level(logging.ERROR), Sandbox(cache_dir=cache) as sb:
        agent = sb.load(ECHO)
        from dagr_wasm.invocation import Invocation, Start

        out = sb.run(agent, Invocation(task_id="t", instance_id="i", specialist="s", event=Start("mine")))
        assert out.result == b"mine", "the forged artifact ran"
        assert sb.cache.refused is not None and "others may read or write it" in str(sb.cache.refused)
        assert sb.cache.stats.disk_hits == 0 and sb.cache.stats.compiles == 1
    assert "compiled-cache key" in caplog.text


def test_a_key_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    elsewhere = tmp_path / "elsewhere.key"
    elsewhere.write_bytes(b"k" * 32)
    elsewhere.chmod(0o600)
    (cache / "host.key").symlink_to(elsewhere)
    with Sandbox(cache_dir=cache) as sb:
        sb.load(ECHO)
        assert sb.cache.refused is not None and "cannot be opened safely" in str(sb.cache.refused)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_a_key_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _forge(cache, b"k" * 32)
    os.chmod(cache / "host.key", 0o600)
    os.chown(cache / "host.key", 12345, 12345)
    with Sandbox(cache_dir=cache) as sb:
        sb.load(ECHO)
        assert sb.cache.refused is not None and "owned by uid 12345" in str(sb.cache.refused)
        assert sb.cache.stats.disk_hits == 0


def test_a_new_key_is_created_private(tmp_path: Path) -> None:
    with Sandbox(cache_dir=tmp_path) as sb:
        sb.load(ECHO)
        assert sb.cache.refused is None
    info = (tmp_path / "host.key").stat()
    assert info.st_mode & 0o777 == 0o600 and info.st_uid == os.geteuid()
