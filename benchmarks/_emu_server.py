"""The emulator in its own process, so its CPU is not the measured process's.

Prints its URL on the first line, then answers ``counts`` on stdin with a JSON line of the
requests received per endpoint (``emu.counts``) and ``batch_requests``, the requests carried
by every Anthropic batch created; exits at EOF.
``python benchmarks/_emu_server.py [--turnaround 1.0]``.
"""

from __future__ import annotations

import argparse
import json
import sys

from llmfleet.emulator import EmulatorConfig, start_emulator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turnaround", type=float, default=1.0)
    args = parser.parse_args()
    with start_emulator(EmulatorConfig(turnaround_s=args.turnaround)) as emu:
        print(emu.url, flush=True)
        for line in sys.stdin:
            if line.strip() == "counts":
                counts = dict(emu.counts)
                # Requests received in Anthropic batches, all batches together.
                counts["batch_requests"] = sum(len(b.custom_ids) for b in emu.batches.values())
                print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
