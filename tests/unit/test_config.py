"""One mapping from user options to configs: the CLI's flags and the Action's inputs give the same
requests, and an error names the option the way each user wrote it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from regress_action.cli import main
from regress_action.cli_args import build_parser, flag_name
from regress_action.config import (
    OptionError,
    checkpoint_request,
    compare_request,
    task_from,
    task_spec,
)
from regress_action.errors import ConfigError
from regress_action.settings import input_label, load_inputs
from regress_action.spec import IMAGENET_NORMALIZE, MetricTolerance, TaskSpec

COMPARE = {
    # flag: (action input, value)
    "--dataset": ("dataset", "lm_tiny"),
    "--threshold": ("threshold", "0.05"),
    "--metrics": ("metrics", "loss,perplexity"),
    "--gate": ("gate", "perplexity"),
    "--tolerance": ("metric-tolerances", "perplexity=5%"),
    "--significance": ("significance", "gate"),
    "--alpha": ("alpha", "0.1"),
    "--json-out": ("json-path", "out/r.json"),
    "--markdown-out": ("markdown-path", "out/r.md"),
    "--device": ("device", "cpu"),
    "--precision": ("precision", "bf16"),
    "--batch-size": ("batch-size", "8"),
    "--max-examples": ("max-examples", "16"),
    "--workers": ("workers", "2"),
    "--report-name": ("report-name", "lm"),
    "--tokenizer": ("tokenizer", "tok/tokenizer.json"),
    "--context-length": ("context-length", "128"),
    "--stride": ("stride", "64"),
    "--token-dtype": ("token-dtype", "uint16"),
    "--image-size": ("image-size", "32,24"),
    "--normalize": ("normalize", "imagenet"),
    "--dataset-kwargs": ("dataset-kwargs", '{"split": "dev"}'),
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("INPUT_"):
            monkeypatch.delenv(name)


def set_inputs(monkeypatch: pytest.MonkeyPatch, inputs: dict[str, str]) -> None:
    for name, value in inputs.items():
        monkeypatch.setenv(f"INPUT_{name.upper()}", value)


def test_the_cli_and_the_action_ask_for_the_same_comparison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flags = [part for flag, (_, value) in COMPARE.items() for part in (flag, value)]
    args = build_parser().parse_args(
        ["compare", "--baseline-run-id", "1", "--candidate-run-id", "2", "--allow-pickle", *flags]
    )
    set_inputs(monkeypatch, {name: value for name, value in COMPARE.values()})
    set_inputs(monkeypatch, {"baseline-run-id": "1", "candidate-run-id": "2"})
    set_inputs(monkeypatch, {"allow-pickle": "true"})
    ids = {"baseline_run_id": 1, "candidate_run_id": 2, "commit": "abc"}
    from_cli = compare_request(args, flag_name, **ids)
    from_action = compare_request(load_inputs(), input_label, **ids)
    assert from_cli == from_action
    assert from_cli.workers == 2
    assert from_cli.verdict.tolerances == {"perplexity": MetricTolerance(rel=0.05)}
    assert from_cli.json_path == Path("out/r.json") and from_cli.max_examples == 16
    assert from_cli.precision == "bf16"
    data = from_cli.data
    assert (data.tokenizer, data.context_length, data.stride) == ("tok/tokenizer.json", 128, 64)
    assert data.image_size == (32, 24) and data.normalize == IMAGENET_NORMALIZE
    assert data.token_dtype == "uint16" and data.dataset_kwargs == {"split": "dev"}


def test_a_dataset_factory_replaces_the_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = {"baseline_run_id": 1, "candidate_run_id": 2, "commit": None}
    args = build_parser().parse_args(
        ["compare", "--baseline-run-id", "1", "--candidate-run-id", "2",
         "--dataset-factory", "evals.sets:held_out", "--dataset-kwargs", '{"n": 5}']
    )  # fmt: skip
    set_inputs(monkeypatch, {"baseline-run-id": "1", "candidate-run-id": "2"})
    set_inputs(
        monkeypatch, {"dataset-factory": "evals.sets:held_out", "dataset-kwargs": '{"n": 5}'}
    )
    from_cli = compare_request(args, flag_name, **ids)
    assert from_cli.data == compare_request(load_inputs(), input_label, **ids).data
    assert from_cli.dataset == ""  # the factory builds it
    assert from_cli.data.dataset_factory == "evals.sets:held_out"
    assert from_cli.data.dataset_kwargs == {"n": 5}
    no_data = build_parser().parse_args(
        ["compare", "--baseline-run-id", "1", "--candidate-run-id", "2"]
    )
    with pytest.raises(ConfigError, match="--dataset: give an eval set, or --dataset-factory"):
        compare_request(no_data, flag_name, **ids)


BAD_NORMALIZE = '{"mean": [0.5], "std": [0]}'


@pytest.mark.parametrize(
    ("flags", "inputs", "message"),
    [
        (["--image-size", "big"], {"image-size": "big"}, "is not a size"),
        (["--normalize", "[1]"], {"normalize": "[1]"}, "is not a normalisation"),
        (["--normalize", BAD_NORMALIZE], {"normalize": BAD_NORMALIZE}, "std positive"),
        (["--stride", "9", "--context-length", "8"], {"context-length": "8", "stride": "9"},
         "9 is longer than the context length 8"),
        (["--dataset-factory", "nocolon"], {"dataset-factory": "nocolon"},
         "is not 'package.module:callable'"),
    ],
)  # fmt: skip
def test_bad_eval_set_options_name_the_option(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], inputs: dict[str, str], message: str
) -> None:
    ids = {"baseline_run_id": 1, "candidate_run_id": 2, "commit": None}
    dataset = [] if "--dataset-factory" in flags else ["--dataset", "lm_tiny"]
    args = build_parser().parse_args(
        ["compare", "--baseline-run-id", "1", "--candidate-run-id", "2", *dataset, *flags]
    )
    with pytest.raises(ConfigError, match=message) as raised:
        compare_request(args, flag_name, **ids)
    assert str(raised.value).startswith(f"{flags[0]}: ")
    set_inputs(monkeypatch, {"baseline-run-id": "1", "candidate-run-id": "2", **inputs})
    if "dataset-factory" not in inputs:
        set_inputs(monkeypatch, {"dataset": "lm_tiny"})
    with pytest.raises(ConfigError, match=message):
        compare_request(load_inputs(), input_label, **ids)


def test_each_side_can_have_its_own_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    set_inputs(
        monkeypatch,
        {"baseline-checkpoint": "a.safetensors", "candidate-checkpoint": "b.safetensors",
         "dataset": "x", "task": "classification", "num-classes": "3",
         "model-factory": "pkg.mod:build", "model-kwargs": '{"width": 32}',
         "candidate-model-factory": "pkg.mod:build_v2", "candidate-model-kwargs": '{"width": 8}'},
    )  # fmt: skip
    inputs = load_inputs()
    task = task_from(inputs, input_label)
    assert task is not None
    made = {"task": task, "git_sha": None}
    base = checkpoint_request(inputs, checkpoint="a.safetensors", side="baseline", **made)
    cand = checkpoint_request(inputs, checkpoint="b.safetensors", side="candidate", **made)
    assert (base.factory, base.factory_kwargs) == ("pkg.mod:build", {"width": 32})
    assert (cand.factory, cand.factory_kwargs) == ("pkg.mod:build_v2", {"width": 8})
    # Own kwargs alone reuse the shared factory; an own factory alone gets no shared kwargs.
    set_inputs(monkeypatch, {"candidate-model-factory": "", "candidate-model-kwargs": '{"w": 1}'})
    cand = checkpoint_request(load_inputs(), checkpoint="b", side="candidate", **made)
    assert (cand.factory, cand.factory_kwargs) == ("pkg.mod:build", {"w": 1})
    set_inputs(
        monkeypatch, {"candidate-model-factory": "pkg.mod:other", "candidate-model-kwargs": ""}
    )
    cand = checkpoint_request(load_inputs(), checkpoint="b", side="candidate", **made)
    assert (cand.factory, cand.factory_kwargs) == ("pkg.mod:other", {})


def test_the_cli_and_the_action_register_a_checkpoint_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = build_parser().parse_args(
        ["runs", "add", "m.safetensors", "--task", "classification", "--num-classes", "3",
         "--factory", "pkg.mod:build", "--factory-kwargs", '{"width": 8}']
    )  # fmt: skip
    set_inputs(
        monkeypatch,
        {"baseline-checkpoint": "m.safetensors", "candidate-run-id": "2", "dataset": "x",
         "task": "classification", "num-classes": "3", "model-factory": "pkg.mod:build",
         "model-kwargs": '{"width": 8}'},
    )  # fmt: skip
    inputs = load_inputs()
    task = task_from(args, flag_name)
    assert task is not None and task == task_from(inputs, input_label)
    made = {"checkpoint": "m.safetensors", "task": task, "git_sha": None}
    assert checkpoint_request(args, **made) == checkpoint_request(inputs, **made)


def test_task_defaults_by_task() -> None:
    assert task_spec("lm") == TaskSpec(modality="text", task="lm", vocab_size=256)
    assert task_spec("classification", num_classes=4) == TaskSpec(
        modality="vision", task="classification", num_classes=4
    )
    assert task_spec("classification", "text", 4).modality == "text"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"task": "lm", "num_classes": 5}, "{num_classes} is for {task} classification"),
        ({"task": "classification", "vocab_size": 5}, "{vocab_size} is for {task} lm"),
        ({"task": "classification"}, "{task} classification needs {num_classes}"),
        ({"task": "classification", "num_classes": 1}, "{num_classes}: "),
    ],
)
def test_a_task_that_does_not_fit_names_the_option(given: dict[str, object], message: str) -> None:
    with pytest.raises(OptionError) as info:
        task_spec(**given)  # type: ignore[arg-type]
    assert info.value.template.startswith(message)
    assert (
        info.value.named(flag_name)
        .args[0]
        .startswith(
            message.format(task="--task", num_classes="--num-classes", vocab_size="--vocab-size")
        )
    )


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--task", "lm", "--num-classes", "5"], "--num-classes is for --task classification"),
        (["--task", "classification"], "--task classification needs --num-classes"),
        (["--task", "classification", "--num-classes", "1"], "--num-classes: "),
    ],
)
def test_runs_add_names_the_flag(
    argv: list[str], flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "r.db"
    assert main(["runs", "add", "m.safetensors", *argv, "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"regress-action: error: {flag}") and err.count("\n") == 1
    assert not db.exists()  # the task is checked before the database is opened


@pytest.mark.parametrize(
    ("tolerances", "fragment"),
    [
        (["loss=lots"], "argument --tolerance: loss: 'lots' is neither a number"),
        (["loss=0.02", "loss=5%"], "argument --tolerance: loss is given twice"),
    ],
)
def test_bad_tolerances_name_the_flag(
    tolerances: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [part for tolerance in tolerances for part in ("--tolerance", tolerance)]
    argv = ["compare", "--baseline-run-id", "1", "--candidate-run-id", "2", "--dataset", "x"]
    with pytest.raises(SystemExit) as info:
        main([*argv, *flags])
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_tolerances_of_several_flags_are_gathered() -> None:
    args = build_parser().parse_args(
        ["compare", "--baseline-run-id", "1", "--candidate-run-id", "2", "--dataset", "x",
         "--tolerance", "loss=0.02|1%", "--tolerance", "perplexity=5%, ece=0.1"]
    )  # fmt: skip
    assert args.tolerances == {
        "loss": MetricTolerance(abs=0.02, rel=0.01),
        "perplexity": MetricTolerance(rel=0.05),
        "ece": MetricTolerance(abs=0.1),
    }


def test_fp16_on_cpu_is_one_line_naming_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "r.db"
    argv = ["compare", "--baseline-run-id", "1", "--candidate-run-id", "2", "--dataset", "x"]
    assert main([*argv, "--device", "cpu", "--precision", "fp16", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "regress-action: error: --precision fp16 needs a CUDA device, but --device is cpu; "
        "use --precision bf16 or fp32 on CPU\n"
    )
    assert not db.exists()  # checked before the database is opened


def test_fp16_on_a_machine_without_cuda_fails_in_the_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from regress_action.models import save_checkpoint

    if torch.cuda.is_available():
        pytest.skip("device auto picks CUDA here")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_checkpoint(torch.nn.Linear(8, 1), tmp_path / f"m{seed}.pt", "torchscript")
        assert main(["runs", "add", str(tmp_path / f"m{seed}.pt"), "--task", "regression",
                     "--db", db]) == 0  # fmt: skip
    capsys.readouterr()
    argv = ["compare", "--baseline-run-id", "1", "--candidate-run-id", "2"]
    argv += ["--dataset", "regression_tiny", "--db", db, "--precision", "fp16"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("regress-action: error: precision fp16 needs a CUDA device")
    assert err.count("\n") == 1


def test_the_precision_input_is_checked_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from regress_action.config import check_precision
    from regress_action.errors import ConfigError

    set_inputs(monkeypatch, {"baseline-run-id": "1", "candidate-run-id": "2", "dataset": "x"})
    set_inputs(monkeypatch, {"precision": " BF16 "})
    assert load_inputs().precision == "bf16"
    set_inputs(monkeypatch, {"precision": "fp8"})
    with pytest.raises(ConfigError, match=r"^input precision: .*'fp32', 'bf16' or 'fp16'"):
        load_inputs()
    set_inputs(monkeypatch, {"precision": "fp16", "device": "cpu"})
    message = r"^input precision fp16 needs a CUDA device, but input device is cpu; use input"
    with pytest.raises(ConfigError, match=message):
        check_precision(load_inputs(), input_label)
