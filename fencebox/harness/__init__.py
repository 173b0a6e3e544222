"""The adaptive-attack harness: defended models, attacks, threat models, checks, runner and reports."""

from __future__ import annotations

from fencebox.harness.defended import DefendedClassifier, UndefendedClassifier

__all__ = ["DefendedClassifier", "UndefendedClassifier"]
