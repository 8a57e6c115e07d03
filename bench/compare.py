"""`make bench-compare OLD=a.json NEW=b.json`: which benchmarks moved beyond their run-to-run spread.

The noise of a benchmark is measured from the two runs themselves: the larger of the two
interquartile ranges of its rounds (or, with fewer than four rounds, the larger min-max
range). A change is flagged when the medians differ by more than ``--k`` times that noise.
Exit status 1 when anything got slower.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from bench import journal


@dataclass(frozen=True)
class Change:
    name: str
    old: float
    new: float
    noise: float

    @property
    def ratio(self) -> float:
        return self.new / self.old if self.old else float("inf")


def load(path: str) -> dict[str, dict]:
    """{fullname: stats} of a pytest-benchmark JSON file or a run's journal (bench/journal.py)."""
    data = journal.load_results(path)
    return {b["fullname"]: b["stats"] for b in data.get("benchmarks", [])}


def noise(stats: dict) -> float:
    if stats.get("rounds", 0) >= 4 and stats.get("iqr") is not None:
        return float(stats["iqr"])
    return float(stats["max"] - stats["min"])


def compare(old: dict[str, dict], new: dict[str, dict], k: float = 2.0):
    """(regressions, improvements, unchanged, only_old, only_new)."""
    reg, imp, same = [], [], []
    for name in sorted(set(old) & set(new)):
        o, n = old[name], new[name]
        c = Change(name, float(o["median"]), float(n["median"]), max(noise(o), noise(n)))
        delta = c.new - c.old
        if abs(delta) > k * c.noise and abs(delta) > 0:
            (reg if delta > 0 else imp).append(c)
        else:
            same.append(c)
    return reg, imp, same, sorted(set(old) - set(new)), sorted(set(new) - set(old))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--k", type=float, default=2.0, help="flag beyond k x the measured spread (default 2)")
    a = ap.parse_args(argv)
    reg, imp, same, gone, added = compare(load(a.old), load(a.new), a.k)
    for label, rows in (("REGRESSION", reg), ("improved", imp)):
        for c in rows:
            print(f"{label:10} {c.name}: {c.old * 1e3:.3f} -> {c.new * 1e3:.3f} ms ({c.ratio:.2f}x; "
                  f"spread {c.noise * 1e3:.3f} ms)")
    print(f"{len(reg)} slower, {len(imp)} faster, {len(same)} within the spread; "
          f"{len(gone)} only in OLD, {len(added)} only in NEW")
    return 1 if reg else 0


if __name__ == "__main__":
    sys.exit(main())
