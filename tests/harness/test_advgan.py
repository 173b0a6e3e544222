"""The AdvGAN attack: the budget in whole grey levels, training against a defended model, caching, PGD beside it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from fencebox import load_chain
from fencebox.errors import ConfigError, ModelError
from fencebox.harness import DefendedClassifier, UndefendedClassifier
from fencebox.harness.advgan import AdvGANConfig, evaluate_advgan, train_generator
from fencebox.models.advgan import Generator, generate_uint8, grey_levels, load_generator, save_generator
from tests.harness.toy import toy_data, toy_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = AdvGANConfig(epochs=2, batch=32, lr=2e-3, seed=1)


def test_grey_levels_is_the_floor_of_255_eps() -> None:
    assert (
        grey_levels(0.3) == 76
        and grey_levels(8 / 255) == 8
        and grey_levels(0.0) == 0
        and grey_levels(1.0) == 255
    )
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError):
            grey_levels(bad)


@settings(max_examples=20)
@given(levels=st.integers(1, 255), seed=st.integers(0, 2**16))
def test_generated_images_stay_within_the_budget(levels: int, seed: int) -> None:
    torch.manual_seed(seed)
    gen = Generator(1).eval()
    with torch.no_grad():  # an untrained generator with large weights saturates tanh: the worst case
        for p in gen.parameters():
            p.mul_(20.0)
    images = np.random.default_rng(seed).integers(0, 256, (3, 9, 7, 1), dtype=np.uint8)
    adv = generate_uint8(gen, images, levels)
    assert adv.dtype == np.uint8 and adv.shape == images.shape
    assert np.abs(adv.astype(int) - images.astype(int)).max() <= levels


def test_advgan_fools_the_bare_toy_model_and_reports_pgd_beside_it() -> None:
    model = toy_model()
    x, y = toy_data(400)
    judge = DefendedClassifier(model, load_chain("none"), seed=0)
    res = evaluate_advgan(
        judge, UndefendedClassifier(model), (x[:300], y[:300]), (x[300:], y[300:]), 0.2, SMALL, pgd_steps=10
    )
    assert res.levels == 51 and res.n == 100 and res.attacked == round(res.clean_accuracy * 100)
    # the trained generator fools the bare MLP far more often than random corners of the same budget do
    rng = np.random.default_rng(0)
    x_te, y_te = x[300:], y[300:]
    corner = x_te.astype(int) + 51 * rng.choice([-1, 1], size=x_te.shape)
    ok = judge.judge(x_te) == y_te
    noise_rate = float((judge.judge(corner.clip(0, 255).astype(np.uint8))[ok] != y_te[ok]).mean())
    assert res.success_rate > noise_rate + 0.1, (res.success_rate, noise_rate)
    assert res.pgd_success_rate is not None and res.pgd_success_rate >= 0.5
    assert res.images_per_s > 0 and res.pgd_images_per_s is not None and res.pgd_images_per_s > 0
    assert res.robust_accuracy == pytest.approx(res.clean_accuracy * (1 - res.success_rate))


@pytest.mark.parametrize(("gradient", "eot"), [("bpda", 1), ("surrogate", 1), ("surrogate", 2)])
def test_advgan_through_a_chain_with_either_gradient_estimator(gradient: str, eot: int) -> None:
    model = toy_model()
    x, y = toy_data(120)
    chain = load_chain("median(size=3)") if eot == 1 else load_chain("gaussian_noise()")
    judge = DefendedClassifier(model, chain, seed=2)
    attack = DefendedClassifier(model, chain, gradient=gradient, eot_samples=eot, seed=3)
    cfg = dataclasses.replace(SMALL, epochs=1, limit=64)
    res = evaluate_advgan(judge, attack, (x[:100], y[:100]), (x[100:], y[100:]), 0.1, cfg, pgd_steps=2)
    assert res.gradient == gradient and res.eot == eot and res.levels == 25
    assert 0.0 <= res.success_rate <= 1.0 and res.attacked <= res.n == 20
    assert len(res.per_example["broken"]) == 20


def test_generators_are_cached_and_savable(tmp_path: Path) -> None:
    model = toy_model()
    x, y = toy_data(80)
    judge = DefendedClassifier(model, load_chain("none"), seed=0)
    cfg = dataclasses.replace(SMALL, epochs=1)
    args = (judge, UndefendedClassifier(model), (x[:60], y[:60]), (x[60:], y[60:]), 0.1, cfg)
    first = evaluate_advgan(*args, pgd_steps=0, cache_dir=tmp_path, cache_key={"model": "toy"})
    files = list(tmp_path.glob("advgan-*.safetensors"))
    assert len(files) == 1
    again = evaluate_advgan(*args, pgd_steps=0, cache_dir=tmp_path, cache_key={"model": "toy"})
    assert again.per_example == first.per_example and again.train_seconds == first.train_seconds
    gen, levels, meta = load_generator(files[0])
    assert levels == 25 and "train_seconds" in meta
    # save / load round trip gives the same adversarial images
    out = save_generator(gen, levels, tmp_path / "copy.safetensors")
    gen2, levels2, _ = load_generator(out)
    np.testing.assert_array_equal(generate_uint8(gen, x[:5], levels), generate_uint8(gen2, x[:5], levels2))


def test_bad_generator_files_and_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such"):
        load_generator(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="readable"):
        load_generator(tmp_path / "junk.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelError, match="not an AdvGAN generator"):
        load_generator(tmp_path / "other.safetensors")
    for bad in ({"epochs": 0}, {"lr": 0.0}, {"alpha": -1.0}, {"limit": 0}):
        with pytest.raises(ConfigError):
            dataclasses.replace(SMALL, **bad).validate()  # type: ignore[arg-type]
    model = toy_model()
    x, y = toy_data(10)
    judge = DefendedClassifier(model, load_chain("none"))
    with pytest.raises(ConfigError, match="grey level"):
        evaluate_advgan(judge, UndefendedClassifier(model), (x, y), (x, y), 0.001, SMALL)
    with pytest.raises(ConfigError):
        train_generator(UndefendedClassifier(model), x, y, 0, SMALL)
