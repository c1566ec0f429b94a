"""Test-only wrapper: the real operator, which dies (as a crash would: no cleanup) right after the first
status write that raises the term, before any label moves.

    python -m e2e.crashing_operator --kubeconfig ... run ...   (the same arguments as `python -m ftso`)
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ftso import cli
from ftso.controller import Controller
from ftso.store import Key

CRASH_EXIT_CODE = 9


def _crash_after_new_term(original: Any) -> Any:
    async def write_status(self: Controller, key: Key, status: dict[str, Any]) -> None:
        before = int((self.store.resources[key].get("status") or {}).get("term") or 0)
        await original(self, key, status)
        if int(status.get("term") or 0) > before > 0:
            print(f"crashing after writing term {status['term']} for {key}", file=sys.stderr, flush=True)
            os._exit(CRASH_EXIT_CODE)

    return write_status


def main() -> None:
    Controller._write_status = _crash_after_new_term(Controller._write_status)  # type: ignore[method-assign]
    sys.exit(cli.main())


if __name__ == "__main__":
    main()
