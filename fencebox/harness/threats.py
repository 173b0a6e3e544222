"""Threat models: what the attacker knows, and so which model its gradients (or queries) come from.

White-box threats craft with gradients of an ``nn.Module``; every candidate is then judged by the
deployed system (exact chain, fresh draw, uint8 input):

- ``oblivious``: the attacker ignores the defence and attacks the bare model;
- ``transfer``: crafted on a separate undefended source model (``--source``), then sent to the target;
- ``bpda``: the defended model, identity backward through the chain, one draw per step;
- ``eot``: the defended model with the chain's own surrogates backward, averaged over K draws;
- ``bpda-eot``: identity backward, averaged over K draws (K >= 20 for random chains).

Black-box threats only query the deployed system through an oracle under an output policy:

- ``blackbox-scores``: probabilities exposed, score-based Square attack (L∞; HopSkipJump for L2);
- ``blackbox-label``: labels only, decision-based HopSkipJump.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fencebox.errors import InputError
from fencebox.harness.defended import DefendedClassifier, UndefendedClassifier
from fencebox.models.base import Classifier
from fencebox.transforms.base import Transform


@dataclass(frozen=True)
class Threat:
    """One threat model: its name, whether it is white-box, and how its gradients are taken."""

    name: str
    whitebox: bool
    defended: bool = True
    gradient: str = "bpda"
    eot: bool = False
    policy: str | None = None
    description: str = ""


THREATS: dict[str, Threat] = {
    t.name: t
    for t in (
        Threat("oblivious", True, defended=False, description="attack the bare model, then defend"),
        Threat("transfer", True, defended=False, description="attack a separate undefended source model"),
        Threat("bpda", True, gradient="bpda", description="identity backward through the chain"),
        Threat("eot", True, gradient="surrogate", eot=True, description="chain surrogates backward, EOT"),
        Threat("bpda-eot", True, gradient="bpda", eot=True, description="identity backward, EOT"),
        Threat("blackbox-scores", False, policy="scores", description="Square attack on exposed scores"),
        Threat("blackbox-label", False, policy="label", description="HopSkipJump on labels only"),
    )
}
ALIASES: dict[str, tuple[str, ...]] = {
    "blackbox": ("blackbox-scores", "blackbox-label"),
    "adaptive": ("bpda", "eot", "bpda-eot"),
    "all": tuple(THREATS),
}


def parse_threats(names: list[str]) -> list[Threat]:
    """Resolve threat names and aliases (``blackbox``, ``adaptive``, ``all``) to Threat objects, in order."""
    out: list[Threat] = []
    for raw in names:
        for name in ALIASES.get(raw, (raw,)):
            if name not in THREATS:
                known = ", ".join([*THREATS, *ALIASES])
                raise InputError(f"unknown threat model {name!r}; expected one of {known}")
            if THREATS[name] not in out:
                out.append(THREATS[name])
    return out


def effective_gradient(threat: Threat, chain: Transform, eot_samples: int) -> tuple[str, int]:
    """The gradient mode and EOT count a white-box threat really uses on ``chain``.

    A chain whose surrogate is the identity makes ``eot`` and ``bpda-eot`` the same attack, and a
    deterministic chain needs one draw, so equal configurations share one cache entry.
    """
    gradient = "bpda" if chain.surrogate_kind == "identity" else threat.gradient
    k = eot_samples if (threat.eot and chain.randomized) else 1
    return gradient, k


def attack_model(
    threat: Threat,
    target: Classifier,
    chain: Transform,
    eot_samples: int,
    seed: int,
    source: Classifier | None = None,
    workers: int = 1,
) -> nn.Module:
    """The module a white-box threat takes gradients of."""
    if not threat.whitebox:
        raise InputError(f"{threat.name} is a black-box threat; it has no gradient model")
    if threat.name == "oblivious":
        return UndefendedClassifier(target)
    if threat.name == "transfer":
        return UndefendedClassifier(source if source is not None else target)
    gradient, k = effective_gradient(threat, chain, eot_samples)
    return DefendedClassifier(target, chain, gradient=gradient, eot_samples=k, seed=seed, workers=workers)
