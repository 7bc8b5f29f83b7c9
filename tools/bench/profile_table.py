"""Own and cumulative time per function from a py-spy profile in collapsed-stack form
(`py-spy record --format raw`): the table docs/bench.md quotes.

    python -m tools.bench.profile_table profile.txt [--top 25] [--grep app/]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# A frame of py-spy's raw format: "function (path/to/file.py:line)".
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


@dataclass(frozen=True, slots=True)
class Row:
    function: str
    own: int
    cumulative: int


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/app/", "/tools/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1] if marker != "/lib/python3" else "stdlib/" + path.rsplit("/", 1)[-1]
            if marker in ("/app/", "/tools/"):
                path = marker.strip("/") + "/" + path
            break
    return f"{match['function']} ({path})"


def table(lines: list[str]) -> tuple[int, list[Row]]:
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(f) for f in stack.split(";") if f]
        if frames and frames[0].startswith(("process ", "thread ")):
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            cumulative[name] += count
    names = set(own) | set(cumulative)
    return total, [Row(n, own[n], cumulative[n]) for n in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--grep", default="", help="only functions whose name contains this")
    args = parser.parse_args()
    total, rows = table(args.profile.read_text().splitlines())
    rows = [r for r in rows if args.grep in r.function]
    for title, key in (("own", lambda r: r.own), ("cumulative", lambda r: r.cumulative)):
        print(f"\n| function | own % | cumulative % |   (top {args.top} by {title}; {total} samples)")
        print("|---|---:|---:|")
        for row in sorted(rows, key=key, reverse=True)[: args.top]:
            print(f"| `{row.function}` | {100 * row.own / total:.1f} | {100 * row.cumulative / total:.1f} |")


if __name__ == "__main__":
    main()
