"""`python -m lmmreg.tracking init | link` (lmmreg.tracking.cli)."""

from lmmreg.tracking.cli import main

main()
