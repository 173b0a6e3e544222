"""The adaptive-attack harness: defended models, attacks, threat models, verdicts, checks, runner and reports.

>>> from fencebox.harness import Data, EvalConfig, run_evaluation
>>> doc = run_evaluation(model, {"jpeg": load_chain("guo2018-jpeg")}, Data(images, labels), EvalConfig.fast())
"""

from __future__ import annotations

from fencebox.harness.defended import DefendedClassifier, UndefendedClassifier
from fencebox.harness.evaluate import Data, Options, run_evaluation
from fencebox.harness.runner import EvalConfig

__all__ = ["Data", "DefendedClassifier", "EvalConfig", "Options", "UndefendedClassifier", "run_evaluation"]
