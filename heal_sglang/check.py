"""``python -m heal_sglang.check``: the installed SGLang version and the supported releases, each
SGLang name heal reaches into (with the releases it applies to), then SGLang's plugins loaded the
way the server does and what heal_sglang registered.  Exits 1 if anything is missing."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points


def main() -> int:
    from heal_sglang import compat

    rows = compat.report()
    from sglang.srt.plugins import GENERAL_PLUGINS_GROUP, load_plugins

    eps = [ep for ep in entry_points(group=GENERAL_PLUGINS_GROUP) if ep.value == "heal_sglang.plugin:register"]
    rows.append((bool(eps), f"entry point in group {GENERAL_PLUGINS_GROUP} -> heal_sglang.plugin:register"))
    load_plugins()  # what launch_server, Engine and each scheduler do; it logs and swallows plugin errors
    from heal_sglang.plugin import register, report

    error = None
    try:
        register()  # idempotent; raises what load_plugins swallowed
    except Exception as exc:  # reported below, with every row
        error = exc
    try:
        rows += report()
    except compat.CompatError as exc:  # an unsupported SGLang: which hooks apply is unknown
        rows.append((False, f"plugin report: {exc}"))
    for ok, line in rows:
        print(f"[{'ok' if ok else 'MISSING'}] {line}")
    if error is not None:
        print(f"register() failed: {error}", file=sys.stderr)
    failed = sum(not ok for ok, _ in rows)
    print(f"heal_sglang: {len(rows) - failed}/{len(rows)} in place")
    return 1 if failed or error else 0


if __name__ == "__main__":
    sys.exit(main())
