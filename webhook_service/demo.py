"""`make demo`: the whole pipeline on the embedded defaults."""

from __future__ import annotations

import sys


def main() -> int:
    print("make demo: the end-to-end demo is not assembled yet (it arrives with the reconciliation work).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
