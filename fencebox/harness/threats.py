"""Threat models: what the attacker knows, and so which model its gradients (or queries) come from.

White-box threats craft with gradients of an ``nn.Module``; every candidate is then judged by the
deployed system (exact chain, fresh draw, uint8 input):

- ``oblivious``: the attacker ignores the defence and attacks the bare model;
- ``transfer``: crafted on a separate undefended source model (``--source``), then sent to the target;
- ``bpda``: the defended model, one draw per step;
- ``eot``: the defended model, averaged over K draws (the chain's own surrogates);
- ``bpda-eot``: the defended model, averaged over K draws (identity backward).

Every defended white-box threat tries *both* gradient estimators (identity BPDA first, then the
chain's surrogate) when the chain has a non-identity surrogate, and keeps the per-example worst, so
``eot`` and ``bpda-eot`` run the same attacks (one cache entry; the names are kept for old commands).

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
ESCALATION = Threat(
    "escalation",
    True,
    gradient="bpda",
    eot=True,
    description="white-box from the black-box adversarials: both estimators, 2x EOT and restarts",
)
"""Run by the harness itself when a black-box threat beats every white-box one (never asked for)."""

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
    """The first gradient estimator and the EOT count a white-box threat really uses on ``chain``.

    A chain whose surrogate is the identity has one estimator, and a deterministic chain needs one
    draw, so equal configurations share one cache entry.
    """
    gradient = "bpda" if chain.surrogate_kind == "identity" else threat.gradient
    k = eot_samples if (threat.eot and chain.randomized) else 1
    return gradient, k


def estimators(threat: Threat, chain: Transform) -> tuple[str, ...]:
    """Every gradient estimator a white-box threat tries on ``chain`` (per-example worst is kept).

    Undefended threats have the bare model's gradient only ("bpda" names it); defended threats try
    identity BPDA and the chain's surrogate whenever they differ.
    """
    empty = len(getattr(chain, "children", [None])) == 0  # the empty chain: both are the identity
    if not threat.defended or chain.surrogate_kind == "identity" or empty:
        return ("bpda",)
    return ("bpda", "surrogate")


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
