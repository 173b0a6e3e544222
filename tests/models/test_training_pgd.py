"""PGD as training uses it (``fencebox.models.training.adversarial``, over the one PGD in ``fencebox.attacks``): stays in the ε-ball and separates the plain from the adversarially
trained built-in model."""

from __future__ import annotations

import torch

from fencebox.models import Classifier, load_dataset, load_model
from fencebox.models.training import accuracy, adversarial


def test_adversarial_model_is_more_robust() -> None:
    """PGD-10 at eps=0.3 on 100 test digits: the plain model collapses, the adversarially trained one holds."""
    x, y = load_dataset("builtin:mnist-test")
    xt = torch.from_numpy(x[::10]).permute(0, 3, 1, 2).float() / 255
    yt = torch.from_numpy(y[::10])
    robust = {}
    for name in ("mnist", "mnist-adv"):
        model = load_model(f"builtin:{name}", device="cpu")
        gen = torch.Generator().manual_seed(0)

        def attack(
            a: torch.Tensor, b: torch.Tensor, m: Classifier = model, g: torch.Generator = gen
        ) -> torch.Tensor:
            return adversarial(m.logits, a, b, 0.3, 10, 0.05, g)

        robust[name] = accuracy(model.logits, xt, yt, attack=attack)
    assert robust["mnist"] < 0.2
    assert robust["mnist-adv"] > 0.6


def test_pgd_stays_in_the_ball() -> None:
    model = load_model("builtin:mnist", device="cpu")
    x, y = load_dataset("builtin:mnist-test")
    xt = torch.from_numpy(x[:32]).permute(0, 3, 1, 2).float() / 255
    adv = adversarial(
        model.logits, xt, torch.from_numpy(y[:32]), 0.1, 5, None, torch.Generator().manual_seed(0)
    )
    assert float((adv - xt).abs().max()) <= 0.1 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
