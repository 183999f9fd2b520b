"""Scale check of the simulator: seed a large tenant, then walk its users delta over HTTPS.

`python -m simulator.bench --users 100000` prints one JSON line: seeding seconds, peak RSS, and the rate the
simulator serves a full delta walk (raw aiohttp client, pages parsed with msgspec, as the worker does).
The client runs in a separate process so the figure is the server's, not shared with the client's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from azure.identity.aio import ClientSecretCredential

from simulator.server import Simulator, write_info

SELECT = (
    "id,displayName,givenName,surname,mail,userPrincipalName,businessPhones,mobilePhone,streetAddress,city,"
    "state,postalCode,country,jobTitle,department,officeLocation,userType,accountEnabled,assignedLicenses"
)


class Page(msgspec.Struct):
    value: list[dict[str, Any]]
    next_link: str | None = msgspec.field(default=None, name="@odata.nextLink")
    delta_link: str | None = msgspec.field(default=None, name="@odata.deltaLink")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def walk(info: dict[str, Any], select: str) -> tuple[int, float, int]:
    """Walk the whole users delta of the first tenant; returns (users, seconds, pages)."""
    tenant = info["tenants"][0]
    credential = ClientSecretCredential(tenant["tenant_id"], tenant["client_id"], tenant["client_secret"],
                                        authority=info["authority_url"], disable_instance_discovery=True,
                                        connection_verify=info["ca_file"])  # fmt: skip
    token = (await credential.get_token("https://graph.microsoft.com/.default")).token
    await credential.close()
    decoder = msgspec.json.Decoder(Page)
    context = ssl.create_default_context(cafile=info["ca_file"])
    headers = {"Authorization": f"Bearer {token}"}
    users = pages = 0
    url: str | None = f"{info['graph_url']}/users/delta?$select={select}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context), headers=headers) as session:
        started = time.perf_counter()
        while url:
            async with session.get(url) as response:
                page = decoder.decode(await response.read())
            users, pages = users + len(page.value), pages + 1
            url = page.next_link
        return users, time.perf_counter() - started, pages


def _client(info: dict[str, Any], select: str, out: Any) -> None:
    out.put(asyncio.run(walk(info, select)))


async def main(users: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        sim = Simulator(state_dir=Path(tmp), users=users, tenants=1, seed=1)
        await sim.start()
        seed_s = time.perf_counter() - started
        seed_rss = peak_rss_mb()
        write_info(Path(tmp), sim.info)
        tenant = sim.state.first_tenant()
        results = []
        for _ in range(rounds):
            spawn = multiprocessing.get_context("spawn")
            queue: Any = spawn.Queue()
            proc = spawn.Process(target=_client, args=(sim.info.to_json(), SELECT, queue))
            proc.start()
            while proc.is_alive() and queue.empty():
                await asyncio.sleep(0.05)
            results.append(queue.get())
            proc.join()
        await sim.close()
    walked, seconds, pages = min(results, key=lambda r: r[1])
    return {
        "bench": "simulator", "users": users, "groups": len(tenant.groups), "devices": len(tenant.devices),
        "seed_seconds": round(seed_s, 2), "seed_peak_rss_mb": round(seed_rss, 1),
        "delta_users": walked, "delta_pages": pages, "delta_seconds": round(seconds, 2),
        "delta_users_per_s": round(walked / seconds), "first_walk_users_per_s": round(results[0][0] / results[0][1]),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2, help="full walks; the first fills the JSON cache")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.users, args.rounds))))
