"""Patch threats: the universal square patch (EOT over placement) and eyeglass frames on face crops."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fencebox import load_chain
from fencebox.errors import ConfigError
from fencebox.harness import DefendedClassifier, UndefendedClassifier
from fencebox.harness.patch import (
    PatchConfig,
    apply_square,
    evaluate_patch,
    glasses_mask,
    sample_placements,
    square_side,
)
from fencebox.models import load_dataset, load_model
from fencebox.models.data import EYE_LINES, eye_line
from tests.harness.toy import toy_data, toy_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FACES = EYE_LINES["faces"]
SMALL = PatchConfig(steps=8, batch=16, step_size=0.1, seed=3)


@pytest.fixture(scope="module")
def faces() -> tuple[object, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    return (
        load_model("builtin:faces", device="cpu"),
        load_dataset("builtin:faces-train"),
        load_dataset("builtin:faces-test"),
    )


def test_glasses_mask_is_a_frame_over_the_eyes() -> None:
    mask = glasses_mask(FACES, 25, 25)
    assert 0.05 <= mask.mean() <= 0.10  # a realistic frame: 5-10 % of the crop
    rows = np.flatnonzero(mask.any(1))
    assert rows.min() <= FACES.row <= rows.max()  # centred on the eye line
    # the lenses are rims: the pupils themselves stay visible through them
    assert not mask[int(FACES.row), int(FACES.left_x)] and not mask[int(FACES.row), int(FACES.right_x)]
    assert mask[:, int(FACES.left_x)].any() and mask[:, int(FACES.right_x)].any()
    assert not mask[18:].any()  # nothing on the mouth and chin
    # scaled to the input: same share at twice the resolution, within rounding
    assert glasses_mask(FACES, 50, 50).mean() == pytest.approx(mask.mean(), abs=0.02)


def test_bad_patch_arguments_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="eye line"):
        glasses_mask(eye_line("builtin:mnist-test"), 28, 28)
    with pytest.raises(ConfigError, match="larger than the"):
        square_side(1.0, 10, 40)  # 20x20 does not fit a 10-pixel-high image
    for bad in (
        {"shape": "circle"},
        {"size": 0.0},
        {"size": 1.5},
        {"steps": 0},
        {"step_size": -1.0},
        {"scale": (1.2, 0.8)},
        {"rotation": 180.0},
    ):
        with pytest.raises(ConfigError):
            dataclasses.replace(SMALL, **bad).validate()  # type: ignore[arg-type]


@given(side=st.integers(1, 10), cx=st.integers(0, 27), cy=st.integers(0, 27))
def test_square_patch_pastes_exactly_without_rotation_or_scaling(side: int, cx: int, cy: int) -> None:
    left, top = min(cx, 28 - side), min(cy, 28 - side)
    patch = torch.rand(1, side, side, generator=torch.Generator().manual_seed(side))
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    params = {
        "side": torch.full((2,), float(side)),
        "angle": torch.zeros(2),
        "cx": torch.full((2,), left + (side - 1) / 2),
        "cy": torch.full((2,), top + (side - 1) / 2),
    }
    out = apply_square(x, patch, params)
    inside = torch.zeros(28, 28, dtype=torch.bool)
    inside[top : top + side, left : left + side] = True
    torch.testing.assert_close(out[:, 0][:, inside], patch[0].flatten().expand(2, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 0][:, ~inside], x[:, 0][:, ~inside])


def test_placements_stay_in_the_image_and_follow_the_scale_range() -> None:
    cfg = dataclasses.replace(SMALL, scale=(0.5, 3.0))
    p = sample_placements(500, 8, 28, 28, cfg, torch.Generator().manual_seed(0))
    assert float(p["side"].min()) >= 4.0 - 1e-4 and float(p["side"].max()) <= 28.0 + 1e-4
    assert bool(
        (p["cx"] - p["side"] / 2 >= -0.5 - 1e-4).all() & (p["cx"] + p["side"] / 2 <= 27.5 + 1e-4).all()
    )
    assert float(p["angle"].abs().max()) <= np.radians(cfg.rotation) + 1e-6


def test_square_patch_on_mnist_changes_only_a_small_region_and_reports_its_share() -> None:
    model = toy_model()
    x, y = toy_data(40)
    judge = DefendedClassifier(model, load_chain("none"), seed=1)
    cfg = dataclasses.replace(SMALL, size=0.1, steps=20)
    res, shown = evaluate_patch(
        judge, UndefendedClassifier(model), (x[:30], y[:30]), (x[30:], y[30:]), cfg, examples=3
    )
    assert res.n == 10 and res.attacked <= 10 and res.broken <= res.attacked
    assert res.success_rate == pytest.approx(res.broken / max(1, res.attacked))
    assert res.share == pytest.approx(0.1, abs=0.04)  # the patch covers about its nominal share
    assert res.mean_steps == cfg.steps and res.size == 0.1
    changed = (shown["adversarial"] != shown["clean"]).reshape(len(shown["clean"]), -1).mean(1)
    assert (changed <= 0.1 * 1.25**2 + 0.05).all()  # never more than the largest scaled patch (+ soft edge)
    assert shown["purified"].shape == shown["clean"].shape


def test_square_patch_is_cached(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = toy_model()
    x, y = toy_data(30)
    judge = DefendedClassifier(model, load_chain("none"), seed=1)
    args = (judge, UndefendedClassifier(model), (x[:20], y[:20]), (x[20:], y[20:]), SMALL)
    first, _ = evaluate_patch(*args, cache_dir=tmp_path, cache_key={"k": 1})
    assert len(list(tmp_path.glob("patch-*.safetensors"))) == 1
    again, _ = evaluate_patch(*args, cache_dir=tmp_path, cache_key={"k": 1})
    assert again.per_example["broken"] == first.per_example["broken"]


@pytest.mark.parametrize(("gradient", "eot"), [("bpda", 1), ("surrogate", 1), ("surrogate", 3), ("bpda", 3)])
def test_glasses_through_a_chain_with_every_gradient_estimator(faces, gradient: str, eot: int) -> None:  # type: ignore[no-untyped-def]
    model, train, (x, y) = faces
    chain = load_chain("median(size=3)") if eot == 1 else load_chain("gaussian_noise()")
    judge = DefendedClassifier(model, chain, seed=5)
    attack = DefendedClassifier(model, chain, gradient=gradient, eot_samples=eot, seed=6)
    glasses = dataclasses.replace(SMALL, shape="glasses")
    res, shown = evaluate_patch(judge, attack, train, (x, y), glasses, eyes=FACES, examples=2)
    assert res.n == int((y == FACES.face_label).sum())  # only faces are attacked (evasion)
    assert res.gradient == gradient and res.eot == eot
    assert 0 <= res.mean_steps <= SMALL.steps and 0.0 <= res.success_rate <= 1.0
    mask = glasses_mask(FACES, 25, 25)
    assert (shown["adversarial"][:, ~mask] == shown["clean"][:, ~mask]).all()  # only the frame changes


def test_glasses_push_faces_towards_non_face_on_the_bare_model(faces) -> None:  # type: ignore[no-untyped-def]
    # builtin:faces is hard to evade with an 8 % frame (the report measures how rarely it works), but the
    # attack must still move every face towards "non-face", far more than a random frame does
    model, train, (x, y) = faces
    judge = DefendedClassifier(model, load_chain("none"), seed=0)
    cfg = dataclasses.replace(SMALL, shape="glasses", steps=30)
    res, shown = evaluate_patch(
        judge, UndefendedClassifier(model), train, (x, y), cfg, eyes=FACES, examples=25
    )
    assert res.attacked == res.n == 25 and 0.0 <= res.success_rate <= 1.0
    broken = np.asarray(res.per_example["broken"])
    assert (np.asarray(res.per_example["steps"])[~broken] == cfg.steps).all()  # survivors ran every step

    def margin(images: np.ndarray) -> np.ndarray:
        z = model.predict_logits(images)
        return z[:, FACES.face_label] - z[:, 1 - FACES.face_label]

    rng = np.random.default_rng(0)
    mask = glasses_mask(FACES, 25, 25)
    random_frame = shown["clean"].copy()
    random_frame[:, mask] = rng.integers(0, 256, random_frame[:, mask].shape, dtype=np.uint8)
    clean, attacked, noise = margin(shown["clean"]), margin(shown["adversarial"]), margin(random_frame)
    assert (attacked <= clean + 1e-3).all() and (attacked < clean).mean() >= 0.9
    assert np.median(clean - attacked) > 2 * max(np.median(clean - noise), 0.0)


def test_glasses_on_a_data_set_without_eyes_is_refused() -> None:
    model = toy_model()
    x, y = toy_data(10)
    judge = DefendedClassifier(model, load_chain("none"))
    cfg = dataclasses.replace(SMALL, shape="glasses")
    with pytest.raises(ConfigError, match="eye line"):
        evaluate_patch(judge, UndefendedClassifier(model), (x, y), (x, y), cfg, eyes=None)
