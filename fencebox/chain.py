"""Compatibility path: Chain and the random combinators live in :mod:`fencebox.transforms.chain`."""

from __future__ import annotations

from fencebox.transforms.chain import Chain, Choice, RandomApply, RandomOrder

__all__ = ["Chain", "Choice", "RandomApply", "RandomOrder"]
