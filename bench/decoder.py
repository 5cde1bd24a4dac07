"""The input decoder's cost on crafted messages: one message must never cost more
than its size.

    python -m bench.decoder [--out bench/decoder.json]

Each shape is built to defeat a shortcut of the decoder's checks: more than
`Limits.max_depth` brackets (so the nesting check walks the message), strings that
never end, escapes, brackets inside strings. Every shape is timed through the whole
`InputDecoder` (size, key, nesting, contract) at 32 KB and at the size limit, best of
several runs; cost linear in the size makes the second at most about 7.8 times the
first (the sizes' ratio). `tests/test_decoding.py` checks that ratio and
`tests/hostile.py` fuzzes the worker with the same shapes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, git, loadavg, write_results
from schemas import topics
from scoring.decoding import InputDecoder, Limits
from scoring.merge import InputMessage

DEFAULT_OUT = ROOT / "bench" / "decoder.json"
SMALL = 32 * 1024
OPEN = b"[" * 40  # more than Limits.max_depth: the nesting check walks the message


def _repeat(unit: bytes, size: int, head: bytes = b"", tail: bytes = b"") -> bytes:
    return head + unit * max(0, (size - len(head) - len(tail)) // len(unit)) + tail


# A message body of about `size` bytes, by shape.
SHAPES: dict[str, Callable[[int], bytes]] = {
    # The one that took 197 s at 250 KB: an unterminated string of escaped quotes.
    "unterminated escaped quotes": lambda n: _repeat(b'\\"', n, OPEN + b'"'),
    "escaped backslashes": lambda n: _repeat(b"\\\\", n, OPEN + b'"', b'"' + b"]" * 40),
    "brackets inside a string": lambda n: _repeat(b"[{", n, OPEN + b'"', b'"' + b"]" * 40),
    "open brackets": lambda n: _repeat(b"[", n),
    "quotes, escapes and brackets": lambda n: _repeat(b'"[\\"', n),
    "many short strings": lambda n: _repeat(b'"a",', n, OPEN),
    "deep arrays of strings": lambda n: _repeat(b'["\\"",', n),
}


def message(value: bytes) -> InputMessage:
    return InputMessage(topics.ORDERS, 0, 0, b"C1", value, time.time())


def seconds(decoder: InputDecoder, value: bytes, repeats: int = 5) -> float:
    """The best of `repeats` decodes of one message."""
    best = float("inf")
    msg = message(value)
    for _ in range(repeats):
        start = time.perf_counter()
        decoder(msg)
        best = min(best, time.perf_counter() - start)
    return best


def measure(sizes: Sequence[int], repeats: int = 5) -> dict[str, dict[str, float]]:
    """Per shape, the decoder's best time in seconds at each size."""
    decoder = InputDecoder(Limits())
    return {
        name: {str(size): seconds(decoder, build(size), repeats) for size in sizes}
        for name, build in SHAPES.items()
    }


def run() -> dict[str, Any]:
    largest = Limits().max_message_bytes - 64  # key and all, under the limit
    timed = measure((SMALL, largest))
    shapes = {
        name: {
            "ms_32k": round(t[str(SMALL)] * 1e3, 3),
            "ms_at_limit": round(t[str(largest)] * 1e3, 3),
            "ratio": round(t[str(largest)] / t[str(SMALL)], 2),
        }
        for name, t in timed.items()
    }
    worst = max(s["ms_at_limit"] for s in shapes.values())
    return {
        "decoder_worst_ms_at_limit": worst,
        "decoder_worst_ratio": max(s["ratio"] for s in shapes.values()),
        "sizes": [SMALL, largest],
        "size_ratio": round(largest / SMALL, 2),
        "shapes": shapes,
        "target": {"worst_ms_at_limit": "<= 1000", "pass": worst <= 1000},
        "environment": {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "git_commit": git("rev-parse", "--short", "HEAD"),
            "load": loadavg(),
        },
    }


def summary(result: dict[str, Any]) -> str:
    lines = [f"{'shape':32} {'32 KB ms':>9} {'limit ms':>9} {'ratio':>6}"]
    for name, s in result["shapes"].items():
        lines.append(f"{name:32} {s['ms_32k']:9.3f} {s['ms_at_limit']:9.3f} {s['ratio']:6.2f}")
    lines.append(
        f"worst at the size limit: {result['decoder_worst_ms_at_limit']} ms "
        f"(sizes' ratio {result['size_ratio']})"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    result = run()
    write_results(args.out, result, summary(result))


if __name__ == "__main__":
    main()
