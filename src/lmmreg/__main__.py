"""`python -m lmmreg <command>`: the project's commands that are not pipeline stages.

    python -m lmmreg doctor [--params configs/paper.yaml]   # is everything the setting needs in place?
"""

from __future__ import annotations

import sys

COMMANDS = {"doctor": "lmmreg.doctor"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        sys.stderr.write(f"usage: python -m lmmreg {{{','.join(COMMANDS)}}} [options]\n")
        return 2
    import importlib

    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
