"""``fencebox evaluate`` and ``fencebox replay``: parse the command line, call the library, print.

``evaluate`` only turns strings into a model, chains, data and an :class:`EvalConfig` and calls
:func:`fencebox.harness.run_evaluation`; ``replay`` re-judges saved adversarials (:mod:`fencebox.harness.replay`).
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import typer
from typer import _click
from typer.core import TyperCommand

from fencebox.cli_errors import exit_on_error
from fencebox.errors import ConfigError


def split_list(text: str) -> list[str]:
    """Split a comma-separated option at top level only, so chain specs with commas inside () or [] survive."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return [s for s in out if s]


def parse_floats(text: str, what: str) -> list[float]:
    """Parse '0.1,0.3' into floats, with a ConfigError naming the option on bad input."""
    try:
        return [float(v) for v in split_list(text)]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers like 0.1,0.3, got {text!r}") from None


def select_indices(total: int, n: int, how: str) -> np.ndarray:
    """Which examples to evaluate: the first ``n``, or ``n`` evenly spaced ones (in data-set order)."""
    if n < 1:
        raise ConfigError(f"-n must be >= 1, got {n}")
    n = min(n, total)
    if how == "first":
        return np.arange(n)
    if how == "spread":
        return (np.arange(n) * total) // n
    raise ConfigError(f"--select must be 'first' or 'spread', got {how!r}")


def route_name(chain: str, policy: str, i: int) -> str:
    """A service route name for a (chain, policy) pair."""
    slug = re.sub(r"[^A-Za-z0-9_.\-]", "-", chain)[:40].strip("-") or "chain"
    return f"c{i}-{slug}-{policy}"


def evaluate(
    model: str = typer.Option(..., "--model", "-m", help="model reference, e.g. builtin:mnist"),
    data: str = typer.Option("builtin:mnist-test", "--data", "-d", help="data set reference"),
    n: int = typer.Option(100, "-n", "--n", help="use the first N examples of the data set, in order"),
    select: str = typer.Option(
        "first",
        "--select",
        help="'first': the first N examples; 'spread': N evenly spaced examples, in order "
        "(use it for data sets sorted by class)",
    ),
    chains: str = typer.Option(
        "none,fencebox-default", "--chains", help="comma-separated presets or chain specs"
    ),
    threat: str = typer.Option(
        "all",
        "--threat",
        help="oblivious,transfer,bpda,eot,bpda-eot,blackbox-scores,blackbox-label (aliases: "
        "blackbox, adaptive, all); 'patch' adds the patch threats (their own rows, not in 'all')",
    ),
    patch_size: str = typer.Option(
        "0.01,0.02,0.05,0.1", "--patch-size", help="square patch sizes as shares of the image area"
    ),
    patch_shape: str = typer.Option(
        "square", "--patch-shape", help="square|glasses (glasses: face data sets with an eye line)"
    ),
    patch_steps: int = typer.Option(100, "--patch-steps", help="optimisation steps of a patch attack"),
    advgan_epochs: int = typer.Option(5, "--advgan-epochs", help="AdvGAN generator training epochs"),
    train_limit: int = typer.Option(
        0, "--train-limit", help="train patches and AdvGAN on the first N training images (0: all)"
    ),
    attacks: str | None = typer.Option(
        None,
        "--attacks",
        help="fgsm,pgd,cw,apgd-ce,apgd-dlr (apgd = both); default apgd-ce,apgd-dlr,pgd; "
        "advgan adds an AdvGAN table next to PGD",
    ),
    eps: str = typer.Option(
        "0.1,0.2,0.3", "--eps", help="L-inf radii on the [0, 1] pixel scale (floor(255 eps) grey levels)"
    ),
    eps_l2: str = typer.Option("", "--eps-l2", help="L2 radii on the [0, 1] pixel scale (optional)"),
    steps: int | None = typer.Option(
        None, "--steps", help="gradient steps per attack (default 100; --fast 10)"
    ),
    restarts: int | None = typer.Option(
        None, "--restarts", help="random restarts per attack (default 5; --fast 1)"
    ),
    fast: bool = typer.Option(
        False, "--fast", help="smoke run with small budgets; marked as NOT an evaluation"
    ),
    eot: int | None = typer.Option(None, "--eot", help="EOT draws for random chains (default 20; --fast 4)"),
    queries: int | None = typer.Option(
        None, "--queries", help="black-box query budget per image (default 1000)"
    ),
    draws: int | None = typer.Option(
        None, "--draws", help="fresh scoring draws per example for random chains (default 20)"
    ),
    select_draws: int | None = typer.Option(
        None, "--select-draws", help="selection draws ranking each example's candidates (default 10)"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of every random choice"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    source: str | None = typer.Option(
        None, "--source", help="undefended source model for 'transfer' (default: the model)"
    ),
    service: str = typer.Option(
        "local",
        "--service",
        help="black-box oracle: 'local' (in-process, same policy semantics), 'http' (start the "
        "FenceBox service and query it over HTTP) or a base URL of a running service (routes from --route)",
    ),
    route: list[str] = typer.Option(
        [],
        "--route",
        help="with a service URL: CHAIN:POLICY=ROUTE mapping, e.g. fencebox-default:label=mnist",
    ),
    ray: str | None = typer.Option(
        None,
        "--ray",
        metavar="[ADDRESS]",
        help="run the units as Ray tasks: '--ray' alone starts a local Ray, '--ray auto' joins this "
        "machine's cluster, '--ray HOST:PORT' joins a cluster (pip install 'fencebox\\[ray]')",
    ),
    shard: int | None = typer.Option(
        None,
        "--shard",
        help="examples per unit shard (default: all in one; 32 with --ray); same shards, same results",
    ),
    batch: int = typer.Option(128, "--batch", help="attack batch size"),
    workers: int = typer.Option(1, "--workers", help="threads for the chain's exact apply"),
    threads: int = typer.Option(0, "--threads", help="torch threads (0: torch's default)"),
    check_n: int | None = typer.Option(
        None, "--check-n", help="examples used by the sanity checks (default 100)"
    ),
    no_escalate: bool = typer.Option(
        False, "--no-escalate", help="do not re-attack from black-box adversarials when black-box wins"
    ),
    save_adversarials: bool = typer.Option(
        False, "--save-adversarials", help="store each example's final adversarial (uint8 npz) and its seeds"
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="output folder (report.json, report.md, report.html, cache/)"
    ),
) -> None:
    """Evaluate chains in front of MODEL against adaptive and black-box attacks; write reports into OUT."""
    with exit_on_error():
        _evaluate(locals())


def build_config(a: dict[str, Any]) -> Any:
    """The :class:`~fencebox.harness.runner.EvalConfig` the options ask for: full-strength defaults or ``--fast``."""
    from fencebox.harness.runner import EvalConfig, parse_attacks

    given = {
        "steps": a.get("steps"),
        "restarts": a.get("restarts"),
        "eot": a.get("eot"),
        "queries": a.get("queries"),
        "check_n": a.get("check_n"),
        "score_draws": a.get("draws"),
        "select_draws": a.get("select_draws"),
    }
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if a.get("attacks"):
        overrides["attacks"] = parse_attacks(split_list(a["attacks"]))
    overrides.update(
        eps=parse_floats(a.get("eps") or "", "--eps"),
        eps_l2=parse_floats(a.get("eps_l2") or "", "--eps-l2"),
        seed=a.get("seed", 0),
        batch=a.get("batch", 128),
        workers=a.get("workers", 1),
        escalate=not a.get("no_escalate", False),
        shard=a.get("shard"),
    )
    if a.get("fast") and a.get("strong"):
        raise ConfigError("--fast and --strong contradict each other; the defaults are already strong")
    if a.get("strong"):  # old spelling: at least 100 steps and 5 restarts
        overrides["steps"] = max(overrides.get("steps", 100), 100)
        overrides["restarts"] = max(overrides.get("restarts", 5), 5)
    cfg = EvalConfig.fast(**overrides) if a.get("fast") else EvalConfig(**overrides)
    cfg.validate()
    return cfg


def _evaluate(a: dict[str, Any]) -> None:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fencebox.harness.evaluate import Data, Options, count_units, run_evaluation
    from fencebox.harness.http_oracle import HttpOracle, LocalService
    from fencebox.harness.judged import VerdictConfig
    from fencebox.harness.localized import (
        advgan_rows,
        parse_patch_shapes,
        patch_configs,
        patch_rows,
        train_split_of,
    )
    from fencebox.harness.report import write_report
    from fencebox.harness.threats import parse_threats
    from fencebox.models import load_dataset, load_model
    from fencebox.spec import load_chain

    if a["threads"] > 0:
        torch.set_num_threads(a["threads"])
    threat_names = split_list(a["threat"])
    attack_names = split_list(a["attacks"] or "")
    want_patch, want_advgan = "patch" in threat_names, "advgan" in attack_names
    threat_names = [t for t in threat_names if t != "patch"]
    a["attacks"] = ",".join(x for x in attack_names if x != "advgan") or None
    if want_advgan and not a["attacks"]:  # only AdvGAN asked for: no gradient-attack units
        threat_names = [t.name for t in parse_threats(threat_names) if not t.whitebox]
    config = build_config(a)
    threats = parse_threats(threat_names)
    chain_names = split_list(a["chains"])
    chains = {name: load_chain(name) for name in chain_names}
    images, labels = load_dataset(a["data"])
    indices = select_indices(len(images), a["n"], a["select"])
    images, labels = images[indices], labels[indices]
    # with --ray the units run on the workers' GPUs: a driver without one keeps its copy on the CPU
    driver_device = "cpu" if a["ray"] and not torch.cuda.is_available() else a["device"]
    target = load_model(a["model"], device=driver_device)
    shapes = parse_patch_shapes(a["patch_shape"]) if want_patch else []
    sizes = parse_floats(a["patch_size"], "--patch-size")
    if want_patch:  # bad patch arguments fail before any attack
        patch_configs(shapes, sizes, a["data"], images.shape[1:3], a["patch_steps"], a["seed"])
    train = load_dataset(train_split_of(a["data"])) if want_patch or want_advgan else None
    if train is not None and a["train_limit"] > 0:
        train = (train[0][: a["train_limit"]], train[1][: a["train_limit"]])
    source_ref = a["source"]
    source = load_model(source_ref, device=driver_device) if source_ref else None
    out: Path = a["out"]
    console = Console(stderr=True)
    classes_seen = len(set(labels.tolist()))
    if classes_seen < target.num_classes:
        hint = " (is the data set sorted by class? try --select spread)" if a["select"] != "spread" else ""
        console.print(
            f"[bold yellow]warning:[/] the {len(labels)} examples selected cover only {classes_seen} of "
            f"{target.num_classes} classes{hint}"
        )
    if config.smoke:
        console.print("[bold yellow]--fast: a smoke run with small budgets, NOT an evaluation[/]")
    with ExitStack() as stack:
        oracle_factory = None
        oracle_desc = "a local oracle (in-process serving path, same output-policy semantics)"
        if any(not t.whitebox for t in threats) and a["service"] != "local":
            policies = sorted({t.policy or "label" for t in threats if not t.whitebox})
            mapping: dict[tuple[str, str], str] = {}
            if a["service"] == "http":
                routes = []
                for i, name in enumerate(chain_names):
                    for p in policies:
                        mapping[(name, p)] = route_name(name, p, i)
                        routes.append((mapping[(name, p)], a["model"], name, p))
                svc = stack.enter_context(LocalService(routes, threads=max(1, a["workers"])))
                url = svc.url
            else:
                url = a["service"]
                for item in a["route"]:
                    key, _, rname = item.partition("=")
                    cname, _, pol = key.rpartition(":")
                    if not rname or not cname:
                        raise ConfigError(f"--route must look like CHAIN:POLICY=ROUTE, got {item!r}")
                    mapping[(cname, pol)] = rname
            oracle_desc = f"the FenceBox HTTP service at {url} (V2 infer)"

            def oracle_factory(judge: Any, chain_name: str, policy: str) -> HttpOracle:
                """An HTTP oracle on the route serving ``chain_name`` under ``policy``."""
                if (chain_name, policy) not in mapping:
                    raise ConfigError(
                        f"no service route for chain {chain_name!r} with policy {policy!r}; use --route"
                    )
                orc = HttpOracle(url, mapping[(chain_name, policy)])
                stack.callback(orc.close)
                return orc

        options = Options(
            threats=threat_names,
            model_ref=a["model"],
            source=source,
            source_ref=source_ref,
            oracle_factory=oracle_factory,
            oracle=oracle_desc,
            out=out,
            save_adversarials=a["save_adversarials"],
            device=a["device"],
            ray=a["ray"],
        )
        data = Data(images, labels, indices, a["data"])
        total = count_units(chains, threats, config.grid())
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("starting", total=total)
            totals = [total]

            def set_total(n: int) -> None:
                """A Ray run knows its step count once its units are planned (and escalations added)."""
                totals[0] = n
                progress.update(task, total=n)

            options.on_total = set_total
            first = [True]

            def tick(msg: str) -> None:
                """Advance the progress bar past the previous step and show the next one."""
                if not first[0]:
                    progress.advance(task)
                first[0] = False
                progress.update(task, description=msg)

            doc = run_evaluation(target, chains, data, config, options, tick)
            verdict = VerdictConfig(config.seed, config.select_draws, config.score_draws, config.workers)
            save_to = out / "adversarials" if a["save_adversarials"] else None
            if train is not None and want_patch:
                doc["patch_results"] = patch_rows(
                    target, a["model"], a["data"], (images, labels), train, chains, shapes, sizes,
                    config.eot, a["patch_steps"], a["seed"], out / "cache", tick, verdict, save_to,
                )  # fmt: skip
            if train is not None and want_advgan:
                doc["advgan_results"] = advgan_rows(
                    target, a["model"], (images, labels), train, chains, config.eps, config.eot,
                    config.steps, a["advgan_epochs"], a["seed"], out / "cache", tick, verdict, save_to,
                )  # fmt: skip
            progress.update(task, completed=totals[0], description="done")
    paths = write_report(doc, out)
    for c in doc["checks"]:
        if not c["passed"]:
            console.print(f"[bold red]CHECK FAILED[/] {c['name']}: {c['detail']}")
    console.print(f"wrote {paths['json']}, {paths['md']}, {paths['html']}")


def replay(
    report: Path = typer.Argument(..., help="report.json written with --save-adversarials"),
    url: str | None = typer.Option(None, "--url", help="re-judge through a running FenceBox service (V2)"),
    route: list[str] = typer.Option(
        [], "--route", help="with --url: CHAIN=ROUTE, the service route serving each chain of the report"
    ),
    model: str | None = typer.Option(None, "--model", "-m", help="model reference (default: the report's)"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
) -> None:
    """Re-judge a report's saved adversarials through its chains and print the same numbers."""
    from fencebox.harness.replay import replay_report

    with exit_on_error():
        routes = {}
        for item in route:
            cname, _, rname = item.rpartition("=")
            if not cname or not rname:
                raise ConfigError(f"--route must look like CHAIN=ROUTE, got {item!r}")
            routes[cname] = rname
        lines, same = replay_report(report, model=model, device=device, url=url, routes=routes)
        for line in lines:
            typer.echo(line)
        if not same:
            raise typer.Exit(1)


class OptionalRayAddress(TyperCommand):
    """``evaluate`` with ``--ray``'s address optional: a bare ``--ray`` means ``--ray local``."""

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        """Insert ``local`` after a ``--ray`` that ends the line or is followed by another option."""
        out: list[str] = []
        for i, arg in enumerate(args):
            out.append(arg)
            if arg == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                out.append("local")
        return super().parse_args(ctx, out)


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` and ``replay`` to the fencebox command line."""
    app.command("evaluate", cls=OptionalRayAddress)(evaluate)
    app.command("replay")(replay)
