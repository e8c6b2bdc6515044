"""The repository's config file `.regress-action.yml`: read and validated (an error is one line
naming the file, the key path and the fix), published as a JSON schema, and put under the
options the user gives explicitly (CLI flags, Action inputs), over the built-in defaults."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from regress_action import schema
from regress_action.cli_args import build_parser, explicit_options, flag_name
from regress_action.config import compare_request, data_options, verdict_config
from regress_action.config_file import (
    CONFIG_FILE,
    ConfigFile,
    apply_to_namespace,
    find_config,
    load_action_inputs,
    read_config,
)
from regress_action.errors import ConfigError
from regress_action.settings import RunnerEnv, input_label, load
from regress_action.spec import IMAGENET_NORMALIZE, MetricBound, MetricTolerance

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "regress-action.example.yml"
SCHEMA = ROOT / "regress_action" / "schemas" / "config.schema.json"

FILE = """\
threshold: 0.02
tolerances:
  loss: 0.02
  perplexity: 5%
  ece: {abs: 0.01, rel: 0.1}
  brier: "0.02|5%"
bounds:
  accuracy: ">=0.9"
  ece: {max: 0.05}
metrics: [accuracy, loss, ece, brier, perplexity]
gate: primary, loss
significance: margin
alpha: 0.1
resamples: 500
seed: 7
image_size: 32
normalize: imagenet
dataset: vision_tiny
batch_size: 16
device: cpu
report_name: nightly
fail_on_regression: true
"""


def _write(folder: Path, text: str, name: str = CONFIG_FILE) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text, "bad.yml")
    with pytest.raises(ConfigError) as caught:
        read_config(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


# ---------------------------------------------------------------- reading


def test_a_file_is_read_into_the_options(tmp_path: Path) -> None:
    values = read_config(_write(tmp_path, FILE)).file.values()
    assert values["threshold"] == 0.02
    assert values["tolerances"] == {
        "loss": MetricTolerance(abs=0.02),
        "perplexity": MetricTolerance(rel=0.05),
        "ece": MetricTolerance(abs=0.01, rel=0.1),
        "brier": MetricTolerance(abs=0.02, rel=0.05),
    }
    assert values["bounds"] == {"accuracy": MetricBound(min=0.9), "ece": MetricBound(max=0.05)}
    assert values["metrics"] == ("accuracy", "loss", "ece", "brier", "perplexity")
    assert values["gate"] == ("primary", "loss")
    assert values["image_size"] == (32, 32)
    assert values["normalize"] == IMAGENET_NORMALIZE
    assert values["fail_on_regression"] is True
    assert "context_length" not in values  # a key left out keeps the default


def test_an_empty_file_keeps_every_default(tmp_path: Path) -> None:
    loaded = read_config(_write(tmp_path, "# nothing yet\n"))
    assert loaded.source == str(tmp_path / CONFIG_FILE)
    assert loaded.file.values() == {}


def test_the_default_file_is_found_in_the_folder_only_when_it_exists(tmp_path: Path) -> None:
    assert find_config(None, tmp_path) is None
    _write(tmp_path, "threshold: 0.02\n")
    assert find_config(None, tmp_path) == tmp_path / CONFIG_FILE
    assert find_config("other.yml", tmp_path) == Path("other.yml")
    assert read_config(None).source == "defaults"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("tolerence:\n  loss: 0.02\n", ("tolerence: unknown key", "did you mean 'tolerances'")),
        ("metrics-module: ci.metrics\n", ("metrics-module: unknown key", "'metrics_module'")),
        ("tolerances:\n  loss: {abss: 0.1}\n", ("tolerances.loss.abss", "did you mean 'abs'")),
        ("bounds:\n  accuracy: {mn: 0.9}\n", ("bounds.accuracy.mn", "did you mean 'min'")),
        ("zzz: 1\n", ("zzz: unknown key", "valid keys: threshold, tolerances")),
        ("tolerances:\n  perplexity: 5x\n", ("tolerances.perplexity:", "'5x'", "percentage")),
        ("tolerances:\n  loss: -1\n", ("tolerances.loss.abs:", "greater than or equal to 0")),
        ("bounds:\n  accuracy: {min: 1, max: 0}\n", ("bounds.accuracy:", "above ceiling")),
        ("bounds:\n  accuracy: 0.9\n", ("bounds.accuracy:", "'>=0.9'")),
        ("threshold: -1\n", ("threshold:", "greater than or equal to 0")),
        ("threshold: .nan\n", ("threshold:", "finite")),
        ("significance: maybe\n", ("significance:", "'gate'")),
        ("resamples: 5\n", ("resamples:", "100")),
        ("image_size: 0\n", ("image_size:", "not a size")),
        ("normalize: sepia\n", ("normalize:", "imagenet")),
        ("dataset_factory: data\n", ("dataset_factory:", "package.module:callable")),
        ("metrics_module: ci/metrics.py\n", ("metrics_module:", "ci.metrics")),
        ("device: tpu\n", ("device:", "auto, cpu, cuda")),
        ("report_name: 'a--b'\n", ("report_name:", "no '--'")),
        ("- threshold\n", ("must be a mapping", "not a list")),
    ],
)
def test_a_bad_file_is_one_line_naming_the_key_path(
    tmp_path: Path, text: str, needles: tuple[str, ...]
) -> None:
    message = _error(tmp_path, text)
    for needle in needles:
        assert needle in message, message


def test_a_yaml_syntax_error_names_the_line_and_column(tmp_path: Path) -> None:
    message = _error(tmp_path, "threshold: 0.02\ntolerances: {loss: 0.02\nalpha: 0.1\n")
    assert re.match(rf"{re.escape(str(tmp_path / 'bad.yml'))}:\d+:\d+: not valid YAML", message)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("dataset_kwargs:\n  a: &a [1, 2]\n  b: [*a, *a]\n", "aliases (*name) are not supported"),
        ("threshold: 0.02\n" + "#" * (1 << 20), "over 1024 KiB"),
        ("threshold: \udcff\n", "not UTF-8"),
    ],
)
def test_a_file_that_would_exhaust_the_reader_is_refused(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "bad.yml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigError, match=re.escape(needle)):
        read_config(path)


def test_a_missing_file_names_the_option_that_chose_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--config: no config file 'nope.yml'"):
        read_config(Path("nope.yml"))
    with pytest.raises(ConfigError, match=r"^input config: .* is a folder"):
        read_config(tmp_path, "input config")


def test_the_same_keys_may_be_written_in_toml(tmp_path: Path) -> None:
    toml = 'threshold = 0.02\ngate = ["primary"]\n[tolerances]\nloss = 0.02\nperplexity = "5%"\n'
    _write(tmp_path, toml, ".regress-action.toml")
    found = find_config(None, tmp_path)
    assert found == tmp_path / ".regress-action.toml"
    values = read_config(found).file.values()
    assert values["tolerances"]["perplexity"] == MetricTolerance(rel=0.05)
    assert values["threshold"] == 0.02 and values["gate"] == ("primary",)
    _write(tmp_path, "threshold: 0.5\n")  # the YAML file comes first
    assert find_config(None, tmp_path) == tmp_path / CONFIG_FILE


def test_a_pyproject_table_is_a_config_file(tmp_path: Path) -> None:
    _write(tmp_path, '[project]\nname = "x"\n', "pyproject.toml")
    assert find_config(None, tmp_path) is None  # a pyproject.toml without the table
    _write(tmp_path, '[project]\nname = "x"\n\n[tool.regress-action]\nthreshold = 0.03\n',
           "pyproject.toml")  # fmt: skip
    found = find_config(None, tmp_path)
    assert found == tmp_path / "pyproject.toml"
    assert read_config(found).file.values() == {"threshold": 0.03}
    _write(tmp_path, "[tool.regress-action]\ntolerence = 1\n", "pyproject.toml")
    with pytest.raises(ConfigError, match=r"pyproject.toml: tool.regress-action.tolerence: "):
        read_config(tmp_path / "pyproject.toml")
    other = _write(tmp_path, '[project]\nname = "x"\n', "pyproject.toml")
    with pytest.raises(ConfigError, match=r"no \[tool.regress-action\] table"):
        read_config(other)


def test_a_toml_syntax_error_names_the_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "threshold = 0.02\ntolerances = {loss 0.02}\n", "bad.toml")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:2:\d+: not valid TOML"):
        read_config(path)


# ---------------------------------------------------------------- published schema, example


def test_the_committed_schema_is_what_the_model_generates() -> None:
    assert SCHEMA.read_text(encoding="utf-8") == schema.config_schema_text(), (
        "the ConfigFile model changed: regenerate the schema with `make schema` and commit it"
    )


def test_the_example_validates_and_documents_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert text.startswith(
        "# yaml-language-server: $schema=../regress_action/schemas/config.schema.json\n"
    )
    read_config(EXAMPLE)  # the model
    jsonschema.validate(yaml.safe_load(text), json.loads(SCHEMA.read_text(encoding="utf-8")))
    keys = set(re.findall(r"^([a-z_]+):", text, flags=re.MULTILINE))
    assert keys == set(ConfigFile.model_fields)
    for key in ConfigFile.model_fields:  # each key with a comment of its own just above
        assert re.search(rf"^# .*\n{key}:", text, flags=re.MULTILINE), key


def test_the_schema_refuses_what_the_model_refuses() -> None:
    published = json.loads(SCHEMA.read_text(encoding="utf-8"))
    for bad in ({"tolerence": 1}, {"tolerances": {"loss": {"abss": 1}}}, {"threshold": -1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, published)


# ---------------------------------------------------------------- precedence: the CLI

RUNS = ["--baseline-run-id", "1", "--candidate-run-id", "2"]


def _compare_options(argv: list[str], folder: Path) -> object:
    """The namespace `compare` sees: the file in `folder` under the flags of `argv`."""
    args = build_parser().parse_args(argv)
    apply_to_namespace(args, read_config(find_config(args.config, folder)), explicit_options(argv))
    return args


def test_the_file_overrides_the_built_in_defaults(tmp_path: Path) -> None:
    _write(tmp_path, FILE)
    args = _compare_options(["compare", *RUNS], tmp_path)
    verdict = verdict_config(args, flag_name)
    assert verdict.threshold == 0.02 and verdict.significance == "margin"
    assert verdict.alpha == 0.1 and (verdict.resamples, verdict.seed) == (500, 7)
    assert verdict.gate == ("primary", "loss")
    assert data_options(args, flag_name).image_size == (32, 32)
    request = compare_request(
        args, flag_name, baseline_run_id=1, candidate_run_id=2, commit=None, config_source="f"
    )
    assert (request.dataset, request.batch_size, request.device) == ("vision_tiny", 16, "cpu")
    assert request.report_name == "nightly" and request.config_source == "f"


def test_flags_given_override_the_file_even_at_their_default_value(tmp_path: Path) -> None:
    _write(tmp_path, FILE)
    argv = ["compare", *RUNS, "--threshold", "0.01", "--significance", "gate", "--seed", "0",
            "--batch-size", "64", "--dataset", "lm_tiny"]  # fmt: skip
    args = _compare_options(argv, tmp_path)
    verdict = verdict_config(args, flag_name)
    assert (verdict.threshold, verdict.significance, verdict.seed) == (0.01, "gate", 0)
    assert verdict.alpha == 0.1  # not given: the file's
    assert args.batch_size == 64 and args.dataset == "lm_tiny"


def test_a_flag_naming_the_eval_set_replaces_the_files_either_way(tmp_path: Path) -> None:
    _write(tmp_path, "dataset_factory: evalsets:build\ndataset_kwargs: {n: 3}\n")
    args = _compare_options(["compare", *RUNS, "--dataset", "lm_tiny"], tmp_path)
    assert args.dataset == "lm_tiny" and args.dataset_factory is None
    assert args.dataset_kwargs == {"n": 3}


def test_per_metric_tolerances_and_bounds_merge_the_flags_entry_winning(tmp_path: Path) -> None:
    _write(tmp_path, FILE)
    argv = ["compare", *RUNS, "--tolerance", "loss=1%", "--tolerance", "nll=0.5",
            "--bound", "accuracy>=0.5"]  # fmt: skip
    verdict = verdict_config(_compare_options(argv, tmp_path), flag_name)
    assert verdict.tolerances == {
        "loss": MetricTolerance(rel=0.01),  # the flag's entry replaces the file's
        "perplexity": MetricTolerance(rel=0.05),
        "ece": MetricTolerance(abs=0.01, rel=0.1),
        "brier": MetricTolerance(abs=0.02, rel=0.05),
        "nll": MetricTolerance(abs=0.5),
    }
    assert verdict.bounds == {"accuracy": MetricBound(min=0.5), "ece": MetricBound(max=0.05)}


def test_no_file_no_flags_is_todays_defaults(tmp_path: Path) -> None:
    args = _compare_options(["compare", *RUNS], tmp_path)
    assert args.config_source == "defaults"
    assert verdict_config(args, flag_name) == verdict_config(
        build_parser().parse_args(["compare", *RUNS]), flag_name
    )


def test_another_file_is_chosen_with_config(tmp_path: Path) -> None:
    _write(tmp_path, "threshold: 0.02\n")
    other = _write(tmp_path, "threshold: 0.3\n", "ci.yml")
    args = _compare_options(["compare", *RUNS, "--config", str(other)], tmp_path)
    assert args.config_source == str(other)
    assert verdict_config(args, flag_name).threshold == 0.3


def test_a_command_takes_only_the_keys_it_has(tmp_path: Path) -> None:
    _write(tmp_path, FILE)
    args = _compare_options(["evaluate", "--run-id", "1"], tmp_path)
    assert not hasattr(args, "threshold") and args.metrics[0] == "accuracy"


# ---------------------------------------------------------------- precedence: the Action


@pytest.fixture
def action_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace with the inputs every step needs; the config file is the test's."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    monkeypatch.chdir(workspace)
    for key in [k for k in os.environ if k.upper().startswith("INPUT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("GITHUB_WORKSPACE", str(workspace))
    monkeypatch.delenv("RUNNER_TEMP", raising=False)
    monkeypatch.setenv("INPUT_BASELINE-RUN-ID", "1")
    monkeypatch.setenv("INPUT_CANDIDATE-RUN-ID", "2")
    return workspace


def test_the_action_reads_the_default_file_of_the_workspace(
    action_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(action_env, FILE)
    # What the runner passes for inputs the workflow did not set: action.yml's defaults, or "".
    monkeypatch.setenv("INPUT_THRESHOLD", "0.01")
    monkeypatch.setenv("INPUT_SIGNIFICANCE", "gate")
    monkeypatch.setenv("INPUT_METRICS", "")
    inputs, loaded = load_action_inputs(load(RunnerEnv))
    assert loaded.source == CONFIG_FILE
    verdict = verdict_config(inputs, input_label)
    assert (verdict.threshold, verdict.significance, verdict.alpha) == (0.02, "margin", 0.1)
    assert (verdict.resamples, verdict.seed) == (500, 7)
    assert inputs.dataset == "vision_tiny" and inputs.report_name == "nightly"
    assert inputs.json_path == Path("regress-action/nightly.json")  # the file's report name
    assert data_options(inputs, input_label).normalize == IMAGENET_NORMALIZE


def test_inputs_the_workflow_sets_win_and_tolerances_merge(
    action_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(action_env, FILE)
    monkeypatch.setenv("INPUT_THRESHOLD", "0.05")
    monkeypatch.setenv("INPUT_METRIC-TOLERANCES", "loss=1%")
    monkeypatch.setenv("INPUT_DATASET-FACTORY", "evalsets:build")
    inputs, _ = load_action_inputs(load(RunnerEnv))
    verdict = verdict_config(inputs, input_label)
    assert verdict.threshold == 0.05
    assert verdict.tolerances["loss"] == MetricTolerance(rel=0.01)
    assert verdict.tolerances["perplexity"] == MetricTolerance(rel=0.05)
    assert inputs.dataset is None and inputs.dataset_factory == "evalsets:build"


def test_the_action_without_a_file_is_unchanged(
    action_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INPUT_DATASET", "lm_tiny")
    inputs, loaded = load_action_inputs(load(RunnerEnv))
    assert loaded.source == "defaults" and inputs.threshold == 0.01


def test_the_config_input_must_stay_in_the_workspace(
    action_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = _write(action_env.parent, "threshold: 0.5\ndataset: lm_tiny\n", "elsewhere.yml")
    monkeypatch.setenv("INPUT_CONFIG", str(outside))
    with pytest.raises(ConfigError, match=r"^input config: .* is outside the workspace"):
        load_action_inputs(load(RunnerEnv))
    (action_env / "link.yml").symlink_to(outside)
    monkeypatch.setenv("INPUT_CONFIG", "link.yml")
    with pytest.raises(ConfigError, match=r"^input config: 'link.yml' .*through a symlink"):
        load_action_inputs(load(RunnerEnv))


def test_a_bad_file_in_the_action_names_the_file_and_key(
    action_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(action_env, "dataset: lm_tiny\ntolerances:\n  perplexity: lots\n", "ci.yml")
    monkeypatch.setenv("INPUT_CONFIG", "ci.yml")
    with pytest.raises(ConfigError, match=r"^ci.yml: tolerances.perplexity: 'lots'"):
        load_action_inputs(load(RunnerEnv))


def test_a_bad_input_beside_a_file_is_still_named_as_the_input(
    action_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(action_env, FILE)
    monkeypatch.setenv("INPUT_METRIC-TOLERANCES", "loss=lots")
    with pytest.raises(ConfigError, match=r"^input metric-tolerances: loss: 'lots'"):
        load_action_inputs(load(RunnerEnv))


def test_the_readmes_config_example_validates(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"^```yaml\n(# yaml-language-server.*?)^```", readme, re.M | re.S)
    values = read_config(_write(tmp_path, block)).file.values()
    assert values["tolerances"]["perplexity"] == MetricTolerance(rel=0.05)
