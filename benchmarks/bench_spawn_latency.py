"""`Mesh.spawn` -> reply latency of the trivial agent at given rates, alone: a fresh embedded
nats-server (fsync on), one `dagr host --concurrency 16`, a short warm-up, then
``bench_all.spawn_latency`` (an open loop through ``Mesh.spawn``, 10 s) at each rate.

`just bench` measures the same at half the 1-host maximum, after its throughput runs on the same
server; this runs it with nothing before it, to tell the host's latency from the run's history.

    python benchmarks/bench_spawn_latency.py 476 536
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_all
import watkit  # on the path once bench_all is imported

from dagr_wasm.mesh import ConnectOptions, EmbeddedServer, Mesh, ServerConfig
from dagr_wasm.paths import compiled_cache_dir
from dagr_wasm.sandbox import Sandbox


async def amain(rates: list[float], seconds: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="dagr-latency-"))
    trivial = watkit.component(bench_all.TRIVIAL_BODY)
    with Sandbox(cache_dir=compiled_cache_dir()) as sandbox:
        sandbox.load(trivial)  # compiled into the shared cache: the host loads it in ms
    server = EmbeddedServer(config=ServerConfig(store_dir=workdir / "store", sync_always=True))
    await asyncio.to_thread(server.start)
    try:
        async with await Mesh.connect(ConnectOptions(servers=(server.url,))) as mesh:
            await mesh.ensure_layout()
            await bench_all.deploy(mesh, "trivial", trivial)
            hosts = bench_all.HostGroup(server.url, 1, bench_all.SLOTS, workdir)
            hosts.start()
            try:
                await hosts.wait_started()
                await bench_all.spawn_latency(mesh, "trivial", 300, 3)  # warm-up
                for rate in rates:
                    found = await bench_all.spawn_latency(mesh, "trivial", rate, seconds)
                    lat = found["spawn_to_finished_ms"]
                    print(
                        f"trivial WAT, {rate:,.0f} spawns/s for {seconds:.0f} s: p50 {lat.p50:.1f} / "
                        f"p90 {lat.p90:.1f} / p99 {lat.p99:.1f} ms ({lat.n} of {found['sent']} replied)"
                    )
            finally:
                await asyncio.to_thread(hosts.stop)
    finally:
        await asyncio.to_thread(server.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rates", type=float, nargs="+", help="spawns per second, one run each")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(amain(args.rates, args.seconds))


if __name__ == "__main__":
    main()
