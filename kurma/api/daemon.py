"""Entry point of `kurmad`, the API daemon."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Say plainly that the daemon is not part of this build yet."""
    print(
        "kurmad: the API daemon is not built yet (it arrives with the API issue)", file=sys.stderr
    )
    return 1
