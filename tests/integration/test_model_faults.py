"""Issue 11, a fault: the host SIGKILLed while its instances' model calls are in flight.

Twenty thinkers each await one model call to a slow scripted provider; the only host, a `dagr host`
process, is SIGKILLed once half the calls wait on the provider, and a new host takes over. Checked
from the data: each agent woke once with the answer, its journal, its inbox, its call record and
its account; and from the provider, how often it saw each call's Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import cbor2
import pytest
from meshkit import StartHostProcess, deploy_all
from modelkit import KEY, Reply, scripted_provider
from test_await_faults import committed_calls, inbox_entries
from test_mesh import eventually, messages
from test_models import KEY_ENV

from dagr_wasm.mesh import ConnectOptions, EmbeddedServer, Mesh, Role
from dagr_wasm.mesh._layout import calls_subject, consumer_name, record_subject, tasks_stream
from dagr_wasm.sandbox import Sandbox

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

INSTANCES = 20
#: The first FAST calls are answered at once (done before the kill), the others after SLOW_S; the
#: host is killed once KILL_AFTER calls reached the provider.
FAST = 5
SLOW_S = 4.0
KILL_AFTER = 13


def connect(server: EmbeddedServer) -> ConnectOptions:
    return replace(server.options(Role.ADMIN), max_reconnect_attempts=-1)


async def idle(mesh: Mesh) -> bool:
    info = await mesh.js.consumer_info(tasks_stream("thinker"), consumer_name("thinker"))
    return not info.num_pending and not info.num_ack_pending


async def test_a_host_killed_mid_call_wakes_each_agent_once_and_books_each_call_once(
    own_server: EmbeddedServer,
    built: dict[str, Path],
    sandbox: Sandbox,
    host_process: StartHostProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)  # the host processes inherit it
    fast = Reply(text="considered", usage=(30, 4))
    slow = replace(fast, delay_s=SLOW_S)
    with scripted_provider("openai", *[fast] * FAST, slow) as provider:
        models = tmp_path / "models.toml"
        models.write_text(
            f'[models.fast]\nprovider = "openai"\nmodel = "m"\nbase_url = "{provider.base_url}"\n'
            f'api_key_env = "{KEY_ENV}"\nconcurrency = 64\nmax_retries = 0\n'
        )
        flags = ("--models", str(models))
        async with await Mesh.connect(connect(own_server)) as mesh:
            await deploy_all(mesh, built, sandbox, ("thinker",))
            killed = host_process(own_server, concurrency=8, flags=flags)
            prompts = {
                await mesh.spawn("thinker", json.dumps({"prompt": f"question {i}", "timeout_s": 120})): i
                for i in range(INSTANCES)
            }

            async def some_waiting() -> bool:
                with provider.lock:
                    return len(provider.requests) >= KILL_AFTER

            await eventually(some_waiting, timeout_s=60, what=f"{KILL_AFTER} calls on the provider")
            killed.kill()
            with provider.lock:
                seen_at_kill = set(provider.by_key)
            done_at_kill = await committed_calls(mesh, seen_at_kill)
            successor = host_process(own_server, concurrency=8, flags=flags)

            results = await asyncio.gather(*(mesh.result(i, wait=True, timeout_s=120) for i in prompts))
            await eventually(lambda: idle(mesh), timeout_s=30, what="every task settled")

            handles: dict[str, str] = {}
            for instance, result in zip(prompts, results, strict=True):
                assert result is not None and result.error is None, (instance, result)
                value: dict[str, Any] = cbor2.loads(result.ok)
                assert value["text"] == "considered" and value["usage"] == [30, 4], value
                # Woke once: the journal's own records (`running` ones are heartbeats).
                records = await messages(mesh, "DAGR_INSTANCES", record_subject(instance))
                journal = [cbor2.loads(m)["state"] for m in records]
                assert [s for s in journal if s != "running"] == ["queued", "suspended", "finished"], journal
                # The answer stored once, recorded once, booked once.
                (entry,) = await inbox_entries(mesh, instance)
                handles[instance] = entry.handle
                assert entry.kind == "model" and entry.chat is not None and entry.chat.text == "considered"
                call_records = await messages(mesh, "DAGR_INSTANCES", calls_subject(instance))
                assert len(call_records) == 1
                account = await mesh.model_account(instance)
                assert (account.own.calls, account.own.input_tokens, account.held.calls) == (1, 30, 0)

        # Towards the provider a call is at least once: one in flight at the kill (seen, not
        # committed) is made again by the new host under the same Idempotency-Key, so the
        # provider sees it twice; a call committed before the kill never again; none three times.
        calls = Counter(provider.by_key)
        assert set(calls) == set(handles.values())
        in_flight = seen_at_kill - done_at_kill
        assert in_flight and done_at_kill, "the kill did not land between calls done and calls in flight"
        assert {k: calls[k] for k in done_at_kill} == dict.fromkeys(done_at_kill, 1)
        assert {k: calls[k] for k in in_flight} == dict.fromkeys(in_flight, 2)
        assert all(n <= 2 for n in calls.values()), calls
        successor.stop()
