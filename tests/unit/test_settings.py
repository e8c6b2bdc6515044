"""Action inputs and runner settings: every input, good and bad values, both env spellings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from regress_action.config import task_from, verdict_config
from regress_action.errors import ConfigError
from regress_action.settings import (
    DEFAULT_DB_URL,
    ActionInputs,
    ClientTuning,
    RunnerEnv,
    input_label,
    input_names,
    load,
    load_inputs,
    split_list,
)
from regress_action.spec import MetricTolerance, TaskSpec, VerdictConfig, parse_tolerances

REQUIRED = {"INPUT_BASELINE-RUN-ID": "1", "INPUT_CANDIDATE-RUN-ID": "2", "INPUT_DATASET": "lm_tiny"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("INPUT_", "GITHUB_", "REGRESS_ACTION_")):
            monkeypatch.delenv(name)


def inputs(monkeypatch: pytest.MonkeyPatch, **env: str) -> ActionInputs:
    for name, value in {**REQUIRED, **env}.items():
        monkeypatch.setenv(name, value)
    return load_inputs()


def bad(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    with pytest.raises(ConfigError) as info:
        inputs(monkeypatch, **{name: value})
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    got = inputs(monkeypatch)
    assert (got.baseline_run_id, got.candidate_run_id, got.dataset) == (1, 2, "lm_tiny")
    assert got.threshold == 0.01 and got.alpha == 0.05
    assert got.significance == "gate" and got.gate is None
    assert got.comment == "update" and got.report_name == "default" and got.fail_on_regression
    assert got.db_url == DEFAULT_DB_URL and got.github_token is None
    assert got.json_path == Path("regress-action/default.json")
    assert got.markdown_path == Path("regress-action/default.md")
    assert (got.device, got.batch_size, got.max_examples) == ("auto", 64, None)
    assert got.metrics is None and got.gate is None and got.tolerances == {}


def test_empty_strings_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # The runner passes every input the workflow did not set as "".
    empty = {f"INPUT_{name.upper()}": "" for name in input_names()}
    got = inputs(monkeypatch, **{**empty, **REQUIRED})
    assert got.threshold == 0.01 and got.fail_on_regression is True and got.metrics is None


def test_hyphenated_and_underscore_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    got = inputs(monkeypatch, **{"INPUT_FAIL-ON-REGRESSION": "false", "INPUT_REPORT_NAME": "lm"})
    assert got.fail_on_regression is False and got.report_name == "lm"


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("INPUT_THRESHOLD", "0.05", "threshold", 0.05),
        ("INPUT_ALPHA", "0.01", "alpha", 0.01),
        ("INPUT_SIGNIFICANCE", "Gate", "significance", "gate"),
        ("INPUT_COMMENT", "off", "comment", "off"),
        ("INPUT_COMMENT", "create", "comment", "create"),
        ("INPUT_FAIL-ON-REGRESSION", "False", "fail_on_regression", False),
        ("INPUT_ALLOW-PICKLE", "true", "allow_pickle", True),
        ("INPUT_METRICS", "accuracy, loss", "metrics", ("accuracy", "loss")),
        ("INPUT_METRICS", "accuracy\nloss\n", "metrics", ("accuracy", "loss")),
        ("INPUT_GATE", "accuracy", "gate", ("accuracy",)),
        ("INPUT_DB-URL", "postgresql+psycopg://u@h/db", "db_url", "postgresql+psycopg://u@h/db"),
        ("INPUT_REPORT-NAME", "lm (cpu)", "report_name", "lm (cpu)"),
        ("INPUT_JSON-PATH", "out/r.json", "json_path", Path("out/r.json")),
        ("INPUT_MARKDOWN-PATH", "out/r.md", "markdown_path", Path("out/r.md")),
        ("INPUT_DEVICE", "CUDA:1", "device", "cuda:1"),
        ("INPUT_BATCH-SIZE", "8", "batch_size", 8),
        ("INPUT_MAX-EXAMPLES", "100", "max_examples", 100),
        ("INPUT_MODEL-KWARGS", '{"hidden": 64}', "factory_kwargs", {"hidden": 64}),
        ("INPUT_MODEL-FACTORY", "pkg.mod:build", "factory", "pkg.mod:build"),
        ("INPUT_METRIC-TOLERANCES", "loss=0.02", "tolerances", {"loss": MetricTolerance(abs=0.02)}),
        ("INPUT_TASK", "classification", "task", "classification"),
        ("INPUT_MODALITY", "vision", "modality", "vision"),
        ("INPUT_NUM-CLASSES", "10", "num_classes", 10),
        ("INPUT_VOCAB-SIZE", "256", "vocab_size", 256),
    ],
)
def test_good_values(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str, expected: object
) -> None:
    assert getattr(inputs(monkeypatch, **{name: value}), field) == expected


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("INPUT_THRESHOLD", "abc", "input threshold"),
        ("INPUT_THRESHOLD", "-1", "input threshold"),
        ("INPUT_THRESHOLD", "nan", "input threshold"),
        ("INPUT_ALPHA", "1.5", "input alpha"),
        ("INPUT_SIGNIFICANCE", "maybe", "input significance"),
        ("INPUT_COMMENT", "sometimes", "input comment"),
        ("INPUT_FAIL-ON-REGRESSION", "perhaps", "input fail-on-regression: use true or false"),
        ("INPUT_ALLOW-PICKLE", "2", "input allow-pickle"),
        ("INPUT_METRIC-TOLERANCES", "loss", "input metric-tolerances"),
        ("INPUT_METRIC-TOLERANCES", "loss=lots", "input metric-tolerances"),
        ("INPUT_METRIC-TOLERANCES", "{bad json", "input metric-tolerances"),
        ("INPUT_REPORT-NAME", "a-->b", "input report-name"),
        ("INPUT_REPORT-NAME", "x" * 101, "input report-name"),
        ("INPUT_DEVICE", "tpu", "input device"),
        ("INPUT_BATCH-SIZE", "0", "input batch-size"),
        ("INPUT_MAX-EXAMPLES", "-3", "input max-examples"),
        ("INPUT_MODEL-KWARGS", "[1, 2]", "input model-kwargs"),
        ("INPUT_MODEL-KWARGS", "{nope", "input model-kwargs"),
        ("INPUT_BASELINE-RUN-ID", "zero", "input baseline-run-id"),
        ("INPUT_CANDIDATE-RUN-ID", "0", "input candidate-run-id"),
        ("INPUT_NUM-CLASSES", "1", "input num-classes"),
        ("INPUT_VOCAB-SIZE", "x", "input vocab-size"),
    ],
)
def test_bad_values_name_the_input(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    message = bad(monkeypatch, name, value)
    assert message.startswith(fragment)


def test_required_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPUT_CANDIDATE-RUN-ID", "2")
    monkeypatch.setenv("INPUT_DATASET", "lm_tiny")
    with pytest.raises(ConfigError, match="baseline-run-id / baseline-checkpoint"):
        load_inputs()
    monkeypatch.setenv("INPUT_BASELINE-RUN-ID", "1")
    monkeypatch.delenv("INPUT_DATASET")
    with pytest.raises(ConfigError, match="inputs dataset / dataset-factory: set one"):
        load_inputs()


def test_run_id_and_checkpoint_are_exclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    message = bad(monkeypatch, "INPUT_BASELINE-CHECKPOINT", "base.pt2")
    assert "exactly one" in message
    monkeypatch.delenv("INPUT_BASELINE-RUN-ID")
    assert load_inputs().baseline_checkpoint == "base.pt2"


def test_report_paths_default_to_the_report_name(monkeypatch: pytest.MonkeyPatch) -> None:
    got = inputs(monkeypatch, **{"INPUT_REPORT-NAME": "lm (cpu)"})
    assert got.json_path == Path("regress-action/lm-cpu.json")
    assert got.markdown_path == Path("regress-action/lm-cpu.md")


def test_task_inputs_become_a_task_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    assert task_from(inputs(monkeypatch), input_label) is None
    classifier = inputs(monkeypatch, INPUT_TASK="classification", **{"INPUT_NUM-CLASSES": "3"})
    assert task_from(classifier, input_label) == TaskSpec(
        modality="vision", task="classification", num_classes=3
    )
    lm = inputs(monkeypatch, INPUT_TASK="lm", **{"INPUT_NUM-CLASSES": ""})
    assert task_from(lm, input_label) == TaskSpec(modality="text", task="lm", vocab_size=256)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"INPUT_TASK": "classification"},
            "input task classification needs input num-classes",
        ),
        (
            {"INPUT_TASK": "lm", "INPUT_NUM-CLASSES": "5"},
            "input num-classes is for input task classification; "
            "input task lm has input vocab-size",
        ),
        (
            {"INPUT_TASK": "classification", "INPUT_VOCAB-SIZE": "5"},
            "input vocab-size is for input task lm; "
            "input task classification has input num-classes",
        ),
        ({"INPUT_TASK": "lm", "INPUT_MODALITY": "vision"}, "input task lm: "),
        ({"INPUT_TASK": "classifcation"}, "input task: unknown task 'classifcation'"),
    ],
)
def test_task_inputs_that_do_not_fit_name_the_inputs(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        task_from(inputs(monkeypatch, **env), input_label)
    assert str(info.value).startswith(message)


def test_verdict_from_the_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    got = inputs(
        monkeypatch,
        INPUT_THRESHOLD="0.05",
        INPUT_METRICS="loss, perplexity",
        INPUT_GATE="perplexity",
        INPUT_SIGNIFICANCE="gate",
        **{"INPUT_METRIC-TOLERANCES": "perplexity=5%"},
    )
    assert verdict_config(got, input_label) == VerdictConfig(
        threshold=0.05,
        metrics=("loss", "perplexity"),
        gate=("perplexity",),
        tolerances={"perplexity": MetricTolerance(rel=0.05)},
        significance="gate",
    )


def test_tolerance_syntax() -> None:
    assert parse_tolerances("loss=0.02, perplexity=5%\naccuracy=0.01|2%") == {
        "loss": MetricTolerance(abs=0.02),
        "perplexity": MetricTolerance(rel=0.05),
        "accuracy": MetricTolerance(abs=0.01, rel=0.02),
    }
    assert parse_tolerances('{"loss": 0.02, "ppl": "5%", "ece": {"abs": 0.1}}') == {
        "loss": MetricTolerance(abs=0.02),
        "ppl": MetricTolerance(rel=0.05),
        "ece": MetricTolerance(abs=0.1),
    }
    for text in ("loss=1|2", "loss=-1", "[1]"):
        with pytest.raises(ValueError):
            parse_tolerances(text)
    assert split_list(" a ;b,\n\nc ") == ("a", "b", "c")


def test_token_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    got = inputs(monkeypatch, **{"INPUT_GITHUB-TOKEN": "ghs_secret"})
    assert got.github_token is not None and got.github_token.get_secret_value() == "ghs_secret"
    assert "ghs_secret" not in repr(got) and "ghs_secret" not in str(got)


def test_runner_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert load(RunnerEnv).github_api_url == "https://api.github.com"
    monkeypatch.setenv("GITHUB_API_URL", "https://ghe.example/api/v3")
    monkeypatch.setenv("GITHUB_REPOSITORY", "octo/models")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "out"))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", "")
    env = load(RunnerEnv)
    assert env.github_api_url == "https://ghe.example/api/v3"
    assert env.github_output == tmp_path / "out" and env.github_step_summary is None
    assert env.run_url() == "https://github.com/octo/models/actions/runs/42"


def test_client_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(ClientTuning).retries == 3
    monkeypatch.setenv("REGRESS_ACTION_GITHUB_RETRIES", "50")
    with pytest.raises(ConfigError, match="REGRESS_ACTION_GITHUB_RETRIES"):
        load(ClientTuning)
