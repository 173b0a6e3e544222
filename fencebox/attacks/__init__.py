"""Gradient attacks and perturbation geometry: one implementation for adversarial training and the harness.

A small layer under both features (``fencebox.models`` trains with :func:`~fencebox.attacks.gradient.pgd`,
``fencebox.harness`` evaluates with it); it depends only on torch and :mod:`fencebox.errors`.
"""
