"""Custom metrics from the user's workspace (`--metrics-module`): reported, tested, recorded,
selected and gated like the built-ins, through the CLI in this process and `compare_models`;
every bad module is one exit-2 line naming the option; the generic bootstrap of a whole-set
metric without a resampler against a slow loop."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import textwrap
import zlib
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from regress_action import compare_models
from regress_action.cli import main
from regress_action.config import verdict_config
from regress_action.errors import ConfigError
from regress_action.metrics import Metric
from regress_action.models import save_checkpoint
from regress_action.records import PairedRecords
from regress_action.resampling import INDEX_STREAM, bootstrap_p, index_deltas
from regress_action.settings import ActionInputs, input_label
from regress_action.spec import EvalConfig, TaskSpec, VerdictConfig
from regress_action.stats import paired_statistics
from regress_action.store import ExperimentDB
from regress_action.tasks import MetricsModuleError, metrics_for, select_metrics
from regress_action.zoo import tiny_cnn

CLS = TaskSpec(modality="vision", task="classification", num_classes=10)
README = Path(__file__).resolve().parents[2] / "README.md"

# A per-example metric (mean) and a whole-set one without a resampler (generic bootstrap).
GOOD = """
import numpy as np
from regress_action.metrics import Metric

def _median_loss(columns, num_classes):
    return float(np.median(columns["loss"]))

def metrics(task):
    if task != "classification":
        return []
    return [
        Metric("mean_confidence", True, "mean", "mean top-1 confidence", ("confidence",)),
        Metric("median_loss", False, "corpus", "median cross-entropy", ("loss",),
               whole_set=_median_loss),
    ]
"""


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Workspace:
    root: Path
    db: str
    base: int
    cand: int

    def write(self, name: str, source: str) -> str:
        (self.root / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    def run(self, *args: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        handler = logging.StreamHandler(err)
        handler.setLevel(logging.WARNING)
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.chdir(self.root)
                with redirect_stdout(out), redirect_stderr(err):
                    try:
                        code = main(list(args))
                    except SystemExit as exc:
                        code = exc.code if isinstance(exc.code, int) else 1
        finally:
            root.removeHandler(handler)
        return Result(code, out.getvalue(), err.getvalue())

    def compare(self, *args: str, base: int | None = None, cand: int | None = None) -> Result:
        return self.run(
            "compare",
            "--baseline-run-id",
            str(self.base if base is None else base),
            "--candidate-run-id",
            str(self.cand if cand is None else cand),
            "--dataset",
            "vision_tiny",
            "--max-examples",
            "160",
            "--resamples",
            "300",
            "--db",
            self.db,
            *args,
        )

    def comparisons(self) -> int:
        with ExperimentDB(self.db) as db:
            return len(db.list_comparisons(limit=1000))


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("custom")
    db = f"sqlite:///{root / 'regress.db'}"
    workspace = Workspace(root, db, 0, 0)
    ids = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_checkpoint(tiny_cnn(), root / f"cnn{seed}.pt", "state_dict")
        added = workspace.run(
            "runs", "add", str(root / f"cnn{seed}.pt"), "--task", "classification",
            "--num-classes", "10", "--factory", "regress_action.zoo:tiny_cnn", "--db", db,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        ids.append(int(added.stdout))
    workspace.base, workspace.cand = ids
    workspace.write("ci_metrics", GOOD)
    yield workspace


@pytest.fixture(autouse=True)
def _forget_imported_modules() -> Iterator[None]:
    """Modules written by a test are imported by name: later tests must not see them."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("ci_", "bad_", "readme_")):
            del sys.modules[name]


# ---------------------------------------------------------------- everywhere a built-in is


def test_custom_metrics_are_reported_tested_and_recorded(ws: Workspace) -> None:
    md = ws.root / "report.md"
    result = ws.compare("--metrics-module", "ci_metrics", "--markdown-out", str(md))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    names = list(report["metrics"])
    # The task's default set, then the module's metrics in its order.
    builtin = ["accuracy", "loss", "top5_accuracy", "macro_f1", "ece", "calibration_error_sq"]
    assert names == [*builtin, "mean_confidence", "median_loss"]
    mean, median = report["metrics"]["mean_confidence"], report["metrics"]["median_loss"]
    assert mean["kind"] == "mean" and mean["test"] == "paired_bootstrap_t"
    assert median["kind"] == "corpus" and median["test"] == "paired_bootstrap"
    assert mean["higher_is_better"] is True and median["higher_is_better"] is False
    for metric in (mean, median):  # tested, and outside the gated family (accuracy alone)
        assert 0 < metric["p_value"] <= 1 and metric["p_adjusted"] is None
        assert metric["gated"] is False
        assert metric["ci_low"] <= metric["delta"] <= metric["ci_high"]
        assert metric["n"] == 160
    shown = ws.run("comparisons", "show", str(report["comparison_id"]), "--db", ws.db)
    assert json.loads(shown.stdout)["metrics"]["median_loss"] == median
    table = md.read_text()
    assert "| median\\_loss |" in table and "| mean\\_confidence |" in table


def test_custom_metrics_are_selected_gated_and_tolerated_by_name(ws: Workspace) -> None:
    args = ["--metrics-module", "ci_metrics", "--no-record", "--threshold", "0"]
    args += ["--significance", "report"]  # the tolerance alone decides, at any n
    args += ["--metrics", "accuracy,median_loss", "--gate", "median_loss", "--fail-on-regression"]
    forward, backward = ws.compare(*args), ws.compare(*args, base=ws.cand, cand=ws.base)
    reports = [json.loads(r.stdout) for r in (forward, backward)]
    assert [list(r["metrics"]) for r in reports] == [["accuracy", "median_loss"]] * 2
    statuses = [r["metrics"]["median_loss"]["status"] for r in reports]
    assert sorted(statuses) == ["improved", "regressed"]  # one way it got worse
    for result, status in zip((forward, backward), statuses, strict=True):
        assert result.returncode == (1 if status == "regressed" else 0), result.stderr
        assert json.loads(result.stdout)["metrics"]["accuracy"]["gated"] is False
    regressed = (forward, backward)[statuses.index("regressed")]
    assert json.loads(regressed.stdout)["regressed_metrics"] == ["median_loss"]
    # A tolerance on the custom metric keeps the same change neutral.
    swap = {} if regressed is forward else {"base": ws.cand, "cand": ws.base}
    tolerant = ws.compare(*args, "--tolerance", "median_loss=10", **swap)
    assert tolerant.returncode == 0, tolerant.stderr
    assert json.loads(tolerant.stdout)["metrics"]["median_loss"]["status"] == "neutral"


def test_the_opt_in_builtins_are_reported_when_named(ws: Workspace) -> None:
    result = ws.compare("--metrics", "accuracy,brier,confidence_auroc", "--no-record")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert list(metrics) == ["accuracy", "confidence_auroc", "brier"]  # report order
    assert metrics["brier"]["test"] == "paired_bootstrap_t"
    assert metrics["confidence_auroc"]["test"] == "paired_bootstrap"
    assert all(0 < m["p_value"] <= 1 for m in metrics.values())
    assert 0 <= metrics["confidence_auroc"]["baseline"] <= 1
    assert 0 <= metrics["brier"]["baseline"] <= 2


def test_compare_models_takes_the_module_through_its_verdict(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ws.root)
    torch.manual_seed(0)
    base, cand = tiny_cnn(), tiny_cnn()
    verdict = VerdictConfig(metrics_module="ci_metrics", gate=("median_loss",), resamples=300)
    result = compare_models(
        base, cand, None, CLS, EvalConfig(dataset="vision_tiny", max_examples=80), verdict=verdict
    )
    median = result["metrics"]["median_loss"]
    assert median["test"] == "paired_bootstrap" and median["p_value"] is not None
    assert median["ci_low"] is not None and median["ci_high"] is not None
    assert median["gated"] and not result["metrics"]["accuracy"]["gated"]
    with pytest.raises(ConfigError, match=r"^metrics_module: cannot import 'ci_missing'"):
        compare_models(
            base, cand, None, CLS, EvalConfig(dataset="vision_tiny", max_examples=8),
            verdict=VerdictConfig(metrics_module="ci_missing"),
        )  # fmt: skip


# ---------------------------------------------------------------- bad modules: one line, exit 2

METRIC = 'Metric("{name}", {direction}, "{kind}", "d", ("{column}",))'
PLAIN = METRIC.format(name="x", direction="True", kind="mean", column="loss")


def _module(body: str) -> str:
    return "from regress_action.metrics import Metric\n" + textwrap.dedent(body)


def _returning(**fields: str) -> str:
    values = {"name": "custom", "direction": "True", "kind": "mean", "column": "loss"} | fields
    return _module(f"def metrics(task):\n    return [{METRIC.format(**values)}]\n")


BAD_MODULES = [
    # (module source, what the one line says)
    (_returning(direction="None"), r"higher_is_better is None; say its direction with True"),
    (_returning(direction='"up"'), r"higher_is_better is 'up'"),
    (_returning(kind="median"), r"unknown kind 'median'; use one of binary, mean, ratio, corpus"),
    (_returning(name="accuracy"), r"'accuracy' of task classification has the name of a built-in"),
    (_returning(name="loss"), r"name of a built-in (classification|lm) metric; rename it"),
    (_returning(column="logits"), r"reads column 'logits', which the classification task does "
     r"not record; its columns: label, prediction, correct, loss, confidence, brier"),
    (_module("raise RuntimeError('no GPU here')\n"), r"cannot import 'bad_\d+' \(RuntimeError: "
     r"no GPU here\); make it importable from .* \(the repository root\)"),
    (_module("import not_installed_anywhere\n"), r"ModuleNotFoundError"),
    (_module(f"METRICS = [{PLAIN}]\n"),
     r"has no function `metrics` \(it has METRICS: return them from it\); define `def"),
    (_module("def metrics(task):\n    return [{'name': 'x'}]\n"),
     r"returned a dict \(\{'name': 'x'\}\), not a regress_action\.metrics\.Metric"),
    (_module(f"def metrics(task):\n    return {PLAIN}\n"),
     r"returned a Metric .*not a list of Metric"),
    (_module("def metrics(task):\n    return [] if task == 'lm' else 1 / 0\n"),
     r"bad_\d+\.metrics\('classification'\) failed \(ZeroDivisionError: division by zero\)"),
    (_module("def metrics(task):\n    return []\n"), r"returned no metric for any task"),
    (_module("def metrics(task):\n    return [Metric('c', False, 'corpus', 'd', ('loss',))]\n"),
     r"a corpus metric needs whole_set"),
    (_module("def metrics(task):\n    return [Metric('c', False, 'mean', 'd', ('loss',), "
             "resampler=object())]\n"), r"is a mean metric with a resampler"),
    (_module("def metrics(task):\n    return [Metric('c', False, 'corpus', 'd', ('loss',), "
             "whole_set=len, resampler=object())]\n"), r"has resampler a object"),
    (_module(f"def metrics(task):\n    m = {PLAIN}\n"
             "    return [m, m] if task == 'classification' else []\n"), r"is returned twice"),
]  # fmt: skip


@pytest.mark.parametrize(("source", "message"), BAD_MODULES)
def test_a_bad_metrics_module_is_one_line_exit_2(ws: Workspace, source: str, message: str) -> None:
    name = ws.write(f"bad_{zlib.crc32(source.encode())}", source)
    before = ws.comparisons()
    result = ws.compare("--metrics-module", name)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("regress-action: error: --metrics-module: "), lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert ws.comparisons() == before and not result.stdout


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ci/metrics.py", r"'ci/metrics.py' is not a module name; .* \(ci\.metrics for ci/"),
        ("ci_not_there", r"cannot import 'ci_not_there' \(ModuleNotFoundError"),
    ],
)
def test_a_bad_module_name_is_one_line_exit_2(ws: Workspace, value: str, message: str) -> None:
    result = ws.compare("--metrics-module", value)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert re.search(r"--metrics-module: " + message, result.stderr), result.stderr


def test_a_whole_set_that_fails_on_the_records_is_the_users_error(ws: Workspace) -> None:
    source = """
        from regress_action.metrics import Metric

        def _broken(columns, num_classes):
            return columns["label"].mean()   # not among its columns

        def metrics(task):
            if task != "classification":
                return []
            return [Metric("broken", True, "corpus", "d", ("loss",), whole_set=_broken)]
    """
    result = ws.compare("--metrics-module", ws.write("bad_whole_set", source), "--no-record")
    assert result.returncode == 2, result.stderr
    assert re.fullmatch(
        r"regress-action: error: --metrics-module: bad_whole_set: metric 'broken': "
        r"whole_set\(columns, num_classes\) failed \(KeyError: 'label'\); it gets one side's "
        r"columns loss \(numpy arrays\) and must return a number\n",
        result.stderr,
    ), result.stderr


def test_the_action_names_its_input(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ws.root)
    assert "metrics_module" in ActionInputs.model_fields
    options = SimpleNamespace(metrics_module="ci_absent")
    with pytest.raises(ConfigError, match=r"^input metrics-module: cannot import 'ci_absent'"):
        verdict_config(options, input_label)
    options = SimpleNamespace(metrics_module="ci/metrics.py")
    with pytest.raises(ConfigError, match=r"^input metrics-module: 'ci/metrics.py' is not a"):
        verdict_config(options, input_label)
    assert verdict_config(SimpleNamespace(metrics_module="ci_metrics"), input_label) == (
        VerdictConfig(metrics_module="ci_metrics")
    )


def test_columns_only_some_task_specs_record_are_checked_against_the_spec(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ws.root)
    module = ws.write(
        "ci_top5",
        _module("def metrics(task):\n    return [Metric('t5', True, 'binary', 'd', "
                "('top5_correct',))] if task == 'classification' else []\n"),
    )  # fmt: skip
    assert "t5" in metrics_for(CLS, module)
    three = TaskSpec(modality="vision", task="classification", num_classes=3)
    with pytest.raises(MetricsModuleError) as caught:
        metrics_for(three, module)
    message = caught.value.named(lambda _: "--metrics-module").args[0]
    assert re.fullmatch(
        r"--metrics-module: ci_top5: metric 't5' of task classification reads column "
        r"'top5_correct', which the classification task does not record for this task spec "
        r"\(num_classes=3\); its columns: label, prediction, correct, loss, confidence, brier",
        message,
    ), message


def test_custom_metrics_are_in_the_default_set_unless_opt_in(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ws.root)
    module = ws.write(
        "ci_opt_in",
        _module("def metrics(task):\n    return [Metric('a', True, 'mean', 'd', ('loss',)), "
                "Metric('b', True, 'mean', 'd', ('loss',), default=False)]\n"),
    )  # fmt: skip
    assert list(select_metrics(CLS, None, module))[-1] == "a"
    assert list(select_metrics(CLS, ["b", "accuracy"], module)) == ["accuracy", "b"]


# ---------------------------------------------------------------- the README's module


def test_the_readme_metrics_module_runs(ws: Workspace) -> None:
    """The README's example module (the ```python block starting `# ci/metrics.py`) works as
    written: as `ci.metrics`, a package folder beside the checkpoints."""
    blocks = re.findall(r"^```python\n(# ci/metrics\.py\n.*?)^```", README.read_text(), re.M | re.S)
    assert len(blocks) == 1, "README.md has one ```python block starting `# ci/metrics.py`"
    package = ws.root / "readme_ci"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "metrics.py").write_text(blocks[0])
    result = ws.compare("--metrics-module", "readme_ci.metrics", "--no-record")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    custom = [name for name in metrics if name not in metrics_for(CLS)]
    assert custom, "the README's module adds a classification metric"
    assert all(metrics[name]["p_value"] is not None for name in custom)


# ---------------------------------------------------------------- the generic bootstrap


def _records(n: int, seed: int) -> PairedRecords:
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 0.5, n)
    cand = base * rng.lognormal(0.05, 0.3, n)
    return PairedRecords("classification", np.arange(n), {"loss": base}, {"loss": cand}, 10)


MEDIAN = Metric(
    "median_loss", False, "corpus", "median", ("loss",),
    whole_set=lambda columns, k: float(np.median(columns["loss"])),
)  # fmt: skip


def test_the_generic_bootstrap_equals_a_slow_loop() -> None:
    records, resamples, seed = _records(90, 3), 200, 11
    stat = paired_statistics(records, {"median_loss": MEDIAN}, resamples=resamples, seed=seed)
    rng = np.random.default_rng([seed, INDEX_STREAM, zlib.crc32(b"median_loss")])
    base, cand = records.baseline["loss"], records.candidate["loss"]
    delta = []
    for _ in range(resamples):
        index = rng.integers(0, records.n, size=records.n)
        delta.append(np.median(cand[index]) - np.median(base[index]))
    ordered = np.sort(delta)
    k = 5  # ⌈0.05 · 200 / 2⌉
    result = stat["median_loss"]
    assert (result.ci_low, result.ci_high) == (ordered[k - 1], ordered[-k])
    assert result.p_value == bootstrap_p(np.array(delta))
    assert result.test == "paired_bootstrap" and result.n == 90


def test_the_generic_bootstrap_drops_undefined_resamples_and_needs_two_examples() -> None:
    ratio = Metric(
        "spread", False, "corpus", "max / min", ("loss",),
        whole_set=lambda c, k: float(np.max(c["loss"]) / np.min(c["loss"]) - 1 or np.nan),
    )  # fmt: skip
    records = _records(40, 4)
    delta = index_deltas(ratio, records, 300, 0)
    assert 0 < delta.size <= 300 and np.isfinite(delta).all()
    tiny = _records(1, 5)
    assert paired_statistics(tiny, {"spread": ratio})["spread"].p_value == 1.0


def test_a_metric_is_the_same_whatever_else_is_requested() -> None:
    records = _records(120, 6)
    extra = Metric("mean_loss", False, "mean", "mean", ("loss",))
    alone = paired_statistics(records, {"median_loss": MEDIAN}, resamples=300, seed=2)
    both = paired_statistics(records, {"mean_loss": extra, "median_loss": MEDIAN}, resamples=300,
                             seed=2)  # fmt: skip
    assert alone["median_loss"] == both["median_loss"]
