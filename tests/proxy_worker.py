"""One client process of the proxy's load test (tests/test_proxy.py): ``calls`` concurrent
raw HTTP create calls with a long budget; prints one JSON summary line.

Usage: ``python proxy_worker.py '<json config>'`` with ``url``, ``token``, ``tag``, ``calls``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import httpx2


async def main(config: dict[str, Any]) -> None:
    tag, calls = config["tag"], config["calls"]
    texts: list[str] = []
    statuses: list[int] = []
    limits = httpx2.Limits(max_connections=calls, max_keepalive_connections=calls)
    async with httpx2.AsyncClient(limits=limits, timeout=120) as http:

        async def one(i: int) -> None:
            answer = await http.post(
                config["url"] + "/v1/messages",
                json={
                    "model": "claude-haiku-4-5",
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": f"{tag}-{i}"}],
                },
                headers={"x-api-key": config["token"], "llmfleet-latency-budget-ms": "600000"},
            )
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                texts.append(answer.json()["content"][0]["text"])

        async with anyio.create_task_group() as tg:
            for i in range(calls):
                tg.start_soon(one, i)
    ok = sorted(texts) == sorted(f"{tag}-{i}" for i in range(calls))
    print(json.dumps({"tag": tag, "ok": ok, "statuses": sorted(set(statuses))}), flush=True)


if __name__ == "__main__":
    anyio.run(main, json.loads(sys.argv[1]))
