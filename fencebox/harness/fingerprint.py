"""What decides a trained patch or generator besides its own settings: the chain's code and the model's weights.

Part of the cache keys of :mod:`fencebox.harness.patch` and :mod:`fencebox.harness.advgan`, so a changed
transform, surrogate, harness module or model never lets a stale patch or generator be reused.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from fencebox.harness.cache import array_fingerprint, code_fingerprint
from fencebox.harness.defended import DefendedClassifier


def judge_fingerprint(judge: DefendedClassifier, *modules: object) -> dict[str, str]:
    """Hashes of the chain's and harness's code, of ``modules``' source files, and of the model's weights."""
    module = judge.model.torch_module()
    weights = (
        array_fingerprint(*[p.detach().cpu().numpy() for p in module.state_dict().values()])
        if module is not None
        else judge.model.card.name
    )
    sources = []
    for m in modules:
        path = inspect.getsourcefile(m)  # type: ignore[arg-type]
        sources.append("?" if path is None else _file_hash(Path(path)))
    return {"code": code_fingerprint(judge.chain), "sources": ",".join(sources), "weights": weights}


def _file_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
