"""Measure the patch, eyeglass and AdvGAN threats and write their reports; print their summary from the JSON.

Usage (from the repository root, PYTHONPATH=.):

  python scripts/threat_reports.py faces    [--out reports/faces] [--steps 100] [--glasses-steps 60]
  python scripts/threat_reports.py advgan   [--out reports/mnist-advgan] [--n 100] [--pgd-steps 20]
  python scripts/threat_reports.py summary  [reports/faces reports/mnist-advgan] [--readme README.md reports/README.md]

``faces``: builtin:faces on its 50 test images (25 faces; only faces are attacked, the goal being a
face read as "not a face"), chains none, fencebox-default, median, jpeg and pixel-deflection, under
the universal square patch (1, 2, 5 and 10 % of the image, trained on the 75 training faces with EOT over
position, scale 0.9-1.1 and rotation ±15°; also 20 %) and the eyeglass frame, each with BPDA and with the chain's
surrogate gradient (EOT over 4 draws on random chains).  Writes report.json, report.md and example
images (clean | attacked | after the chain) under examples/.

``advgan``: builtin:mnist, builtin:mnist-adv and builtin:mnist-advgan (``--models``) with no chain on the
first ``--n`` test digits: PGD (``--pgd-steps``, CE, one random start) and AdvGAN (a generator trained on
``--gan-train`` training digits for ``--gan-epochs`` epochs against each model) at ``--eps`` (0.3, the
training ε of both adversarially trained models), in whole grey levels.  Writes report.json and
report.md; rows of models not run this time are kept.

``summary``: the Markdown tables of both reports, printed from their JSON; ``--readme FILE...`` writes
them between the threats markers of each file (README.md and reports/README.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fencebox import load_chain
from fencebox.harness import DefendedClassifier, UndefendedClassifier
from fencebox.harness.advgan import AdvGANConfig, evaluate_advgan
from fencebox.harness.judged import VerdictConfig
from fencebox.harness.localized import patch_rows
from fencebox.models import load_dataset, load_model

FACE_CHAINS = {
    "none": "none",
    "fencebox-default": "fencebox-default",
    "median": "median(size=3)",
    "jpeg": "jpeg(quality=75)",
    "pixel-deflection": "pixel-deflection",
}
SIZES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.27)
"""The issue's 1, 2, 5 and 10 % of the image area, and 20 and 27 % to show where a patch starts to work."""
EOT = 4
SEED = 3
SELECT_DRAWS, SCORE_DRAWS = 10, 20
"""The harness's verdict defaults: rank on 10 selection draws, score the worst on 20 fresh draws."""
README_BEGIN = "<!-- threats:begin (scripts/threat_reports.py summary --readme) -->"
README_END = "<!-- threats:end -->"


def _save_examples(folder: Path, name: str, shown: dict[str, np.ndarray]) -> str | None:
    """A PNG grid, one row per example: clean | attacked | after the chain, upscaled 4x."""
    from PIL import Image

    if not shown or not len(shown["clean"]):
        return None
    rows = [
        np.concatenate([shown[k][i] for k in ("clean", "adversarial", "purified")], axis=1)
        for i in range(len(shown["clean"]))
    ]
    grid = np.concatenate(rows, axis=0)[..., 0]
    img = Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.Resampling.NEAREST)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    img.save(path)
    return str(path.relative_to(folder.parent))


def headline_rows(results: list[dict[str, Any]]) -> dict[tuple[str, str, Any], dict[str, Any]]:
    """Per (chain, shape, size), the row the summary shows: the per-example "worst of" row of a chain's
    gradient estimators, or the only row where a chain has one estimator (no chain: BPDA is the model's
    gradient).  Never the estimator row with the higher success rate: that picks a row by its result."""
    groups: dict[tuple[str, str, Any], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["chain"], r["shape"], r["size"]), []).append(r)
    out: dict[tuple[str, str, Any], dict[str, Any]] = {}
    for key, rows in groups.items():
        worst = [r for r in rows if str(r["gradient"]).startswith("worst of")]
        if len(worst) == 1:
            out[key] = worst[0]
        elif len(rows) == 1:
            out[key] = rows[0]
        else:
            raise SystemExit(
                f"{key}: {len(rows)} estimator rows and no single 'worst of' row; regenerate the report "
                "with this script"
            )
    return out


def _examples_from(
    row: dict[str, Any], folder: Path, test: tuple[np.ndarray, np.ndarray], shower: DefendedClassifier, k: int
) -> dict[str, np.ndarray]:
    """Up to ``k`` attacked faces of a row (lowest scores first), from its saved selected adversarials."""
    saved = np.load(folder / row["verdict"]["adversarials"]["file"])
    ex = row["per_example"]
    attacked = np.asarray(ex["attacked"] if "attacked" in ex else [c != "clean" for c in ex["chosen"]])
    score = np.asarray(row["per_example"]["score"], dtype=float)
    order = [i for i in np.argsort(score, kind="stable") if attacked[i]][:k]
    adv = saved["images"][order]
    return {"clean": test[0][saved["index"][order]], "adversarial": adv, "purified": shower.purify(adv)}


def faces(args: argparse.Namespace) -> None:
    """The builtin:faces patch and glasses report: the rows ``fencebox evaluate --threat patch`` makes."""
    torch.set_num_threads(1)
    out: Path = args.out
    model = load_model("builtin:faces", device="cpu")
    train, test = load_dataset("builtin:faces-train"), load_dataset("builtin:faces-test")
    old = json.loads((out / "report.json").read_text())["results"] if (out / "report.json").exists() else []
    rows: list[dict[str, Any]] = [r for r in old if r["chain"] not in args.chains]
    verdict = VerdictConfig(seed=SEED, select_draws=SELECT_DRAWS, score_draws=SCORE_DRAWS)
    t_start = time.perf_counter()
    for name in args.chains:
        spec = FACE_CHAINS[name]
        chains = {name: load_chain(spec)}
        made: list[dict[str, Any]] = []
        for shapes, sizes, steps, sub in (
            (["square"], list(args.sizes), args.steps, "square"),
            (["glasses"], [0.05], args.glasses_steps, "glasses"),
        ):
            save_to = out / "adversarials" / f"{name}-{sub}"
            t0 = time.perf_counter()
            new = patch_rows(
                model, "builtin:faces", "builtin:faces-test", test, train, chains, shapes, sizes,
                EOT, steps, SEED, out / "cache", None, verdict, save_to,
            )  # fmt: skip
            for r in new:
                r["verdict"]["adversarials"]["file"] = f"adversarials/{r['verdict']['adversarials']['file']}"
            print(f"{name} {sub}: {len(new)} rows in {time.perf_counter() - t0:.0f} s", flush=True)
            made += new
        shower = DefendedClassifier(model, chains[name], seed=SEED + 7)
        for r in headline_rows(made).values():
            label = f"{name}-{r['shape']}" + ("" if r["shape"] == "glasses" else f"-{r['size']:g}")
            shown = _examples_from(r, out, test, shower, 3)
            r["example_image"] = _save_examples(out / "examples", label, shown)
        for r in made:
            r["chain_spec"] = spec
            print(
                f"{name:17s} {r['shape']:8s} {r['size'] or 0:5.2f} {r['gradient']:20s} eot {r['eot']}: "
                f"success {r['success_rate']:.2f} ({r['broken']}/{r['attacked']} broken), share "
                f"{r['share']:.3f}",
                flush=True,
            )
        rows += made
    report = {
        "config": {
            "model": "builtin:faces",
            "data": "builtin:faces-test",
            "n": len(test[1]),
            "attacked_class": "face (label 1): success = a face read as non-face",
            "patch_steps": args.steps,
            "glasses_steps": args.glasses_steps,
            "sizes": list(args.sizes),
            "step_size": 0.05,
            "batch": 32,
            "eot": EOT,
            "seed": SEED,
            "select_draws": SELECT_DRAWS,
            "score_draws": SCORE_DRAWS,
            "placement": "square: EOT over position, scale 0.9-1.1, rotation ±15°; glasses: fixed on the eye line",
            "rows": "fencebox.harness.localized.patch_rows (what fencebox evaluate --threat patch writes)",
            "machine": platform.machine(),
            "seconds_last_run": round(time.perf_counter() - t_start, 1),
            "chains_last_run": list(args.chains),
            "torch_threads": 1,
        },
        "results": sorted(rows, key=lambda r: list(FACE_CHAINS).index(r["chain"])),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(summary_faces(out) + "\n")
    print(f"wrote {out}/report.json in {report['config']['seconds_last_run']} s")


def advgan(args: argparse.Namespace) -> None:
    """builtin:mnist, mnist-adv and mnist-advgan under a short PGD and an AdvGAN attack."""
    torch.set_num_threads(1)
    out: Path = args.out
    x_tr, y_tr = load_dataset("builtin:mnist-train")
    x_te, y_te = load_dataset("builtin:mnist-test")
    train = (x_tr[: args.gan_train], y_tr[: args.gan_train])
    test = (x_te[: args.n], y_te[: args.n])
    old = json.loads((out / "report.json").read_text())["results"] if (out / "report.json").exists() else []
    rows: list[dict[str, Any]] = [r for r in old if r["model"] not in args.models]
    t_start = time.perf_counter()
    cfg = AdvGANConfig(epochs=args.gan_epochs, batch=64, lr=1e-3, seed=0)
    for ref in args.models:
        model = load_model(ref, device="cpu")
        judge = DefendedClassifier(model, load_chain("none"), seed=5)
        for eps in args.eps:
            judge.reseed(5)
            res = evaluate_advgan(
                judge,
                UndefendedClassifier(model),
                train,
                test,
                eps,
                cfg,
                chain_name="none",
                pgd_steps=args.pgd_steps,
                cache_dir=out / "cache",
                cache_key={"model": ref},
            )
            row = res.to_dict()
            row["model"] = ref
            row["pgd_robust_accuracy"] = (
                res.clean_accuracy * (1 - res.pgd_success_rate) if res.pgd_success_rate is not None else None
            )
            rows.append(row)
            print(
                f"{ref:22s} eps {eps:.1f}: clean {res.clean_accuracy:.2f}  PGD-{args.pgd_steps} robust "
                f"{row['pgd_robust_accuracy']:.2f} ({res.pgd_images_per_s:.0f} img/s)  AdvGAN robust "
                f"{res.robust_accuracy:.2f} ({res.images_per_s:.0f} img/s, trained {res.train_seconds:.0f} s)",
                flush=True,
            )
    report = {
        "config": {
            "models": sorted({r["model"] for r in rows}),
            "chain": "none",
            "data": "builtin:mnist-test",
            "n": args.n,
            "pgd": f"PGD-{args.pgd_steps}, CE, step 2.5 eps / steps, one random start, judged in uint8",
            "advgan": f"generator trained {args.gan_epochs} epochs on the first {args.gan_train} training digits",
            "machine": platform.machine(),
            "seconds_last_run": round(time.perf_counter() - t_start, 1),
        },
        "results": sorted(rows, key=lambda r: (r["model"], r["eps"])),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(summary_advgan(out) + "\n")
    print(f"wrote {out}/report.json in {report['config']['seconds_last_run']} s")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def summary_faces(folder: Path) -> str:
    """Markdown: patch success per chain, shape and size, from report.json's per-example worst rows."""
    report = json.loads((folder / "report.json").read_text())
    cfg = report["config"]
    best = headline_rows(report["results"])
    chains = list(dict.fromkeys(r["chain"] for r in report["results"]))
    sizes = sorted({size for _, shape, size in best if shape == "square"})
    cols = [("square", s) for s in sizes] + [("glasses", None)]
    head = ["chain", "clean (faces)", *[f"patch {100 * s:g}%" for s in sizes], "glasses"]
    first = best[(chains[0], "glasses", None)]
    lines = [
        f"### Patch and eyeglass attacks on {cfg['model']} ({cfg['n']} test images, {first['n']} faces)",
        "",
        "Success rate (mean share of scoring draws on which a face reads as non-face, over the attacked "
        "faces) with its 95% Wilson interval, per example the worse of BPDA's and the chain's surrogate "
        "gradient's patch on the selection draws (no chain: one estimator); the patch's measured share "
        "of the image in brackets.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for chain in chains:
        cells = [chain, _pct(best[(chain, "glasses", None)]["clean_accuracy"])]
        for shape, size in cols:
            r = best.get((chain, shape, size))
            if r is None:
                cells.append("-")
                continue
            lo, hi = r["ci95"]
            cells.append(
                f"{_pct(r['success_rate'])} [{100 * lo:.0f}, {100 * hi:.0f}] ({100 * r['share']:.1f}%)"
            )
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Budget: square patch {cfg['patch_steps']} steps of {cfg['step_size']} on batches of {cfg['batch']} "
        f"training faces, glasses {cfg['glasses_steps']} steps per image; EOT {cfg['eot']} draws on random "
        f"chains; {cfg['placement']}.  Judged like every other threat: {cfg.get('select_draws', 10)} "
        f"selection and {cfg.get('score_draws', 20)} fresh scoring draws (one for a deterministic chain).  "
        f"builtin:faces has only {cfg['n']} test images ({first['n']} faces): the 95 % intervals are wide, "
        "and a check that wants more examples cannot get them from this data set.",
    ]
    return "\n".join(lines)


def summary_advgan(folder: Path) -> str:
    """Markdown: robust accuracy under PGD and AdvGAN per model and ε, with speeds, from report.json."""
    report = json.loads((folder / "report.json").read_text())
    cfg = report["config"]
    lines = [
        f"### AdvGAN next to PGD (chain none, first {cfg['n']} test digits)",
        "",
        "| model | eps (grey levels) | clean | robust under PGD | robust under AdvGAN | PGD img/s | AdvGAN img/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['model']} | {r['eps']:g} ({r['levels']}) | {_pct(r['clean_accuracy'])} | "
            f"{_pct(r['pgd_robust_accuracy'])} | {_pct(r['robust_accuracy'])} | "
            f"{r['pgd_images_per_s']:.0f} | {r['images_per_s']:.0f} |"
        )
    lines += ["", f"PGD: {cfg['pgd']}.  AdvGAN: {cfg['advgan']} (training time not in img/s)."]
    return "\n".join(lines)


def main() -> None:
    """Parse the command line and run one of faces, advgan, summary."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("faces")
    f.add_argument("--out", type=Path, default=Path("reports/faces"))
    f.add_argument("--steps", type=int, default=100)
    f.add_argument("--glasses-steps", type=int, default=60)
    f.add_argument("--sizes", type=float, nargs="+", default=list(SIZES))
    f.add_argument("--chains", nargs="+", default=list(FACE_CHAINS), choices=list(FACE_CHAINS))
    a = sub.add_parser("advgan")
    a.add_argument("--out", type=Path, default=Path("reports/mnist-advgan"))
    a.add_argument("--n", type=int, default=100)
    a.add_argument("--pgd-steps", type=int, default=20)
    a.add_argument("--gan-train", type=int, default=4000)
    a.add_argument("--gan-epochs", type=int, default=5)
    a.add_argument("--eps", type=float, nargs="+", default=[0.3])
    a.add_argument(
        "--models", nargs="+", default=["builtin:mnist", "builtin:mnist-adv", "builtin:mnist-advgan"]
    )
    s = sub.add_parser("summary")
    s.add_argument(
        "folders", nargs="*", type=Path, default=[Path("reports/faces"), Path("reports/mnist-advgan")]
    )
    s.add_argument(
        "--readme",
        type=Path,
        nargs="*",
        default=[],
        help="replace the block between the threats markers in these files (README.md reports/README.md)",
    )
    args = parser.parse_args()
    if args.cmd == "faces":
        faces(args)
    elif args.cmd == "advgan":
        advgan(args)
    else:
        texts = [
            summary_faces(folder) if (folder / "examples").exists() else summary_advgan(folder)
            for folder in args.folders
        ]
        if not args.readme:
            print("\n\n".join(texts))
        for path in args.readme:
            write_block(path, texts)
            print(f"updated {path}")


def write_block(path: Path, texts: list[str]) -> None:
    """Replace the block between the threats markers in ``path`` with ``texts``, their ``###`` titles
    moved one level below the heading the block sits under (``###`` under ``##``, ``####`` under ``###``)."""
    doc = path.read_text()
    if README_BEGIN not in doc or README_END not in doc:
        raise SystemExit(f"{path}: no {README_BEGIN} ... {README_END} block")
    head, rest = doc.split(README_BEGIN, 1)
    titles = [line for line in head.splitlines() if line.startswith("#")]
    level = len(titles[-1].split(" ", 1)[0]) + 1 if titles else 3
    text = "\n\n".join(t.replace("### ", "#" * level + " ", 1) for t in texts)
    path.write_text(head + README_BEGIN + "\n" + text + "\n" + README_END + rest.split(README_END, 1)[1])


if __name__ == "__main__":
    main()
