"""LMM describers: backends behind one interface, the answer parser and the resumable store."""

from lmmreg.describe.base import Answer, DescribeItem, Describer, build_describer, setting_hash

__all__ = ["Answer", "DescribeItem", "Describer", "build_describer", "setting_hash"]
