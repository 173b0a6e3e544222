"""What decides a trained patch or generator besides its own settings: the package's code and the model's weights.

Part of the cache keys of :mod:`fencebox.harness.patch` and :mod:`fencebox.harness.advgan`, so a changed
transform, surrogate, harness module, codec library or model never lets a stale patch or generator be
reused.
"""

from __future__ import annotations

from fencebox.harness.cache import array_fingerprint, code_fingerprint
from fencebox.harness.defended import DefendedClassifier


def judge_fingerprint(judge: DefendedClassifier) -> dict[str, str]:
    """Hashes of the package's source (with the codec libraries' versions) and of the model's weights."""
    module = judge.model.torch_module()
    weights = (
        array_fingerprint(*[p.detach().cpu().numpy() for p in module.state_dict().values()])
        if module is not None
        else judge.model.card.name
    )
    return {"code": code_fingerprint(), "weights": weights}
