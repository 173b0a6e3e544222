"""``run_evaluation`` on a real local two-node Ray cluster: the same report as the local run, retries, resume.

The tests marked ``ray`` start Ray processes, so they run inside a network namespace that has only
loopback (``scripts/run_ray_tests.sh``; ``make test`` does it when root).  Small n, a toy model, one
CPU per node; the whole module takes about a minute on an idle 2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fencebox.errors import ConfigError
from fencebox.harness import Data, EvalConfig, Options, run_evaluation
from fencebox.harness.distributed import move_model
from fencebox.models import load_model
from fencebox.spec import load_chain
from tests.harness.test_escalation import _useless_source
from tests.harness.toy import ToyMnist, toy_data, toy_model

N, SHARD = 24, 8
THREATS = ["transfer", "blackbox-scores"]  # the useless transfer source makes black-box win: escalation runs


def _config(eps: list[float] | None = None) -> EvalConfig:
    return EvalConfig.fast(
        attacks=["fgsm"], eps=eps or [0.15], steps=4, queries=300, check_n=8, score_draws=2, shard=SHARD
    )


def _options(source: ToyMnist | None = None, **kw: Any) -> Options:
    return Options(threats=THREATS, source=source or _useless_source(), source_ref="untrained", **kw)


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """The report without what may differ between runs: timings and ``environment``."""
    d = json.loads(json.dumps(doc))
    d.pop("environment")
    for r in d["results"]:
        r.pop("seconds")
        for a in r["attacks"]:
            a.pop("seconds")
    for c in d["chains"]:
        c.pop("latency_ms_per_image")
    return d


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head and a worker node, one CPU each, on loopback; usage stats and dashboard off."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from ray.cluster_utils import Cluster

    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def local_report() -> dict[str, Any]:
    """The plain in-process run on the same shards (one torch thread, as each Ray task uses)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        images, labels = toy_data(N)
        return run_evaluation(
            toy_model(), {"none": load_chain("none")}, Data(images, labels), _config(), _options()
        )
    finally:
        torch.set_num_threads(old)


@pytest.mark.ray
def test_same_seed_gives_the_local_runs_report_with_one_progress_bar(
    cluster: Any, local_report: dict[str, Any]
) -> None:
    images, labels = toy_data(N)
    ticks: list[str] = []
    totals: list[int] = []
    doc = run_evaluation(
        toy_model(),
        {"none": load_chain("none")},
        Data(images, labels),
        _config(),
        _options(ray=cluster.address, on_total=totals.append),
        progress=ticks.append,
    )
    assert local_report["escalations"] == ["none linf eps=0.15"]  # the dependent tasks ran
    assert comparable(doc) == comparable(local_report)
    env = doc["environment"]["cluster"]
    assert (env["nodes"], env["cpus"], env["gpus"]) == (2, 2.0, 0.0)
    assert env["driver_units"] == 0 and env["units_from_cache"] == 0
    # one bar: its last total counts every call (one per unit, the plan, the driver's scoring step)
    assert totals and len(ticks) == totals[-1] + 1
    assert env["units"] == totals[-1] - 1


@pytest.mark.ray
def test_the_cli_joins_a_cluster_and_its_bar_counts_the_units(cluster: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fencebox.cli import app

    args = ["evaluate", "--ray", cluster.address, "-m", "builtin:mnist", "-n", "8", "--shard", "4"]
    args += ["--fast", "--threat", "oblivious", "--eps", "0.1", "--attacks", "fgsm", "--check-n", "4"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path)])
    assert res.exit_code == 0, (res.output, repr(res.exception)[:3000])
    doc = json.loads((tmp_path / "report.json").read_text())
    env = doc["environment"]["cluster"]
    assert doc["config"]["shard"] == 4 and env["nodes"] == 2 and env["driver_units"] == 0
    steps = env["units"] + 1  # one per unit, then the driver's scoring
    assert f"{steps}/{steps}" in res.output  # the bar ends full, at the Ray run's own count


class TrapSource(ToyMnist):
    """The useless transfer source, except that the first forward anywhere writes its pid and hangs."""

    def __init__(self, marker: Path) -> None:
        super().__init__(_useless_source().net)
        self.marker = str(marker)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Block forever in the first unit that gets here (after leaving the pid), then behave."""
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().logits(x)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        time.sleep(600)
        raise AssertionError("the trapped worker was not killed")


@pytest.mark.ray
def test_a_worker_killed_inside_its_unit_is_retried_and_counted_once(
    cluster: Any, local_report: dict[str, Any], tmp_path: Path
) -> None:
    marker = tmp_path / "trapped.pid"
    images, labels = toy_data(N)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["doc"] = run_evaluation(
                toy_model(),
                {"none": load_chain("none")},
                Data(images, labels),
                _config(),
                _options(TrapSource(marker), ray=cluster.address),
            )
        except Exception as exc:  # surfaced by the assertions below
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 240  # generous: a loaded 2-core machine starts workers slowly
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    pid = int(marker.read_text())
    assert pid != os.getpid()  # a Ray worker, mid-unit
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    assert comparable(result["doc"]) == comparable(local_report)


@pytest.mark.ray
def test_a_rerun_after_the_cluster_stopped_reuses_the_finished_units(
    tmp_path: Path, local_report: dict[str, Any]
) -> None:
    """``ray="local"`` starts a local Ray and stops it when done; a second run with one more chain finds
    every unit of the first in the cache and computes only the new chain's."""
    images, labels = toy_data(N)
    chains = {"none": load_chain("none")}
    first = run_evaluation(
        toy_model(), chains, Data(images, labels), _config(), _options(ray="local", out=tmp_path)
    )
    assert comparable(first) == comparable(local_report)
    done = first["environment"]["cluster"]["units"]
    more = {**chains, "bits": load_chain("guo2018-bitdepth")}
    second = run_evaluation(
        toy_model(), more, Data(images, labels), _config(), _options(ray="local", out=tmp_path)
    )
    env = second["environment"]["cluster"]
    assert env["units_from_cache"] == done  # every unit of the first run, none recomputed
    assert env["units"] > done and env["driver_units"] == 0
    old = [r for r in comparable(first)["results"]]
    assert [r for r in comparable(second)["results"] if r["chain"] == "none"] == old


@pytest.mark.ray
def test_cuda_units_ask_ray_for_gpus_and_a_cluster_without_any_is_refused(cluster: Any) -> None:
    images, labels = toy_data(N)
    with pytest.raises(ConfigError, match="0 GPUs"):
        run_evaluation(
            toy_model(),
            {"none": load_chain("none")},
            Data(images, labels),
            _config(),
            _options(ray=cluster.address, device="cuda"),
        )


def test_a_worker_moves_torch_models_to_the_units_device() -> None:
    """What a GPU worker does with a model the driver kept on its CPU (``meta`` stands in for cuda)."""
    model = load_model("builtin:mnist", device="cpu")
    move_model(model, "meta")
    assert model.device.type == "meta"
    assert {p.device.type for p in model.torch_module().parameters()} == {"meta"}
