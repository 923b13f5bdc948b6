"""One member of a brokered fleet, as its own OS process (driven by the broker tests).

Usage: ``python broker_worker.py '<json config>'``. It opens the fleet, submits ``calls``
batch-route calls at once, and prints one JSON line per outcome as it comes, then a summary.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import anyio
from anthropic import AsyncAnthropic

from llmfleet import RoutingPolicy, open_fleet


def report(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def main(config: dict[str, Any]) -> None:
    tag: str = config["tag"]
    policy = RoutingPolicy(**config["policy"])
    started = time.monotonic()
    async with (
        AsyncAnthropic(api_key="sk-test", base_url=config["emulator"], max_retries=0) as client,
        open_fleet(
            client,
            policy=policy,
            broker=config["redis"],
            lease_ttl_ms=config.get("lease_ttl_ms", 3000),
            broker_timeout_ms=config.get("broker_timeout_ms", 5000),
        ) as fleet,
    ):

        async def one(i: int) -> None:
            text = f"{tag}-call-{i}"
            try:
                message = await fleet.submit_batch(
                    model="claude-haiku-4-5",
                    max_tokens=32,
                    messages=[{"role": "user", "content": text}],
                )
            except Exception as exc:
                report({"i": i, "error": type(exc).__name__, "message": str(exc)})
                return
            block = message.content[0]
            report(
                {
                    "i": i,
                    "type": f"{type(message).__module__}.{type(message).__name__}",
                    "text": block.text if block.type == "text" else "",
                    "want": text,
                }
            )

        async with anyio.create_task_group() as tg:
            for i in range(config["calls"]):
                tg.start_soon(one, i)
        report({"tag": tag, "answered_s": time.monotonic() - started})
    report({"done": True, "tag": tag, "terms_led": fleet.terms_led, "origin": fleet.origin})


if __name__ == "__main__":
    settings = json.loads(sys.argv[1])
    anyio.run(main, settings, backend=settings["backend"])
