"""Typed settings for the GitHub Action: its inputs (`INPUT_*`), the runner's environment
(`GITHUB_*`) and the GitHub client's tuning (`REGRESS_ACTION_GITHUB_*`).

Owns input parsing and validation (lists, tolerances, JSON kwargs, run-id-or-checkpoint rules) and
turns a pydantic ValidationError into one ConfigError naming the input by its action.yml name.
Field names are those of the CLI's options for the same concept (`tolerances` is the input
`metric-tolerances`, `factory` is `model-factory`), so `config` builds the configs from either.
Imports pydantic, pydantic-settings, `errors` and `spec` only (no torch, no PyGithub).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from .errors import ConfigError
from .spec import (
    MetricBound,
    MetricTolerance,
    Precision,
    SignificanceMode,
    check_device,
    check_report_name,
    parse_bounds,
    parse_json_object,
    parse_tolerances,
)

CommentMode = Literal["update", "create", "off"]
CommentOn = Literal["always", "change", "regression"]
OnClean = Literal["keep", "delete", "collapse"]
ActionMode = Literal["compare", "evaluate"]
DEFAULT_DB_URL = "sqlite:///regress-action.db"


def _input(name: str, **kwargs: Any) -> Any:
    """A field read from `INPUT_<NAME>`.

    The runner upper-cases the input name and keeps hyphens (`fail-on-regression` becomes
    `INPUT_FAIL-ON-REGRESSION`, which bash cannot read but Python can); the underscore spelling is
    accepted too, for `docker run -e` and shells.
    """
    upper = name.upper()
    return Field(
        validation_alias=AliasChoices(f"INPUT_{upper}", f"INPUT_{upper.replace('-', '_')}"),
        json_schema_extra={"input": name},
        **kwargs,
    )


def split_list(value: str) -> tuple[str, ...]:
    """`"a, b\\nc"` -> `("a", "b", "c")`: commas, semicolons or newlines separate items."""
    return tuple(item.strip() for item in re.split(r"[,;\n]", value) if item.strip())


class ActionInputs(BaseSettings):
    """The action's inputs. Every field carries its action.yml name; empty strings mean unset
    (the runner passes an input the workflow did not set as an empty string)."""

    model_config = SettingsConfigDict(
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
        # Lists, tolerances and kwargs have friendly string forms parsed by the validators below,
        # not pydantic-settings' default JSON decoding of complex fields.
        enable_decoding=False,
    )

    # compare: the baseline against the candidate; evaluate: the baseline alone, stored for
    # later comparisons (a job on the default branch).
    mode: ActionMode = _input("mode", default="compare")
    baseline_run_id: int | None = _input("baseline-run-id", default=None, ge=1)
    candidate_run_id: int | None = _input("candidate-run-id", default=None, ge=1)
    baseline_checkpoint: str | None = _input("baseline-checkpoint", default=None)
    candidate_checkpoint: str | None = _input("candidate-checkpoint", default=None)
    # The commit baseline-checkpoint is read from (default: a PR event's base commit), so a
    # pull request cannot replace its own baseline; `worktree` reads the checkout's file.
    baseline_checkpoint_ref: str | None = _input(
        "baseline-checkpoint-ref", default=None, max_length=255
    )
    factory: str | None = _input("model-factory", default=None)
    factory_kwargs: dict[str, Any] = _input("model-kwargs", default_factory=dict)
    baseline_factory: str | None = _input("baseline-model-factory", default=None)
    baseline_factory_kwargs: dict[str, Any] = _input("baseline-model-kwargs", default_factory=dict)
    candidate_factory: str | None = _input("candidate-model-factory", default=None)
    candidate_factory_kwargs: dict[str, Any] = _input(
        "candidate-model-kwargs", default_factory=dict
    )
    trust_remote_code: bool = _input("trust-remote-code", default=False)
    task: str | None = _input("task", default=None)  # a name in the task registry
    modality: str | None = _input("modality", default=None)
    num_classes: int | None = _input("num-classes", default=None, ge=2)
    vocab_size: int | None = _input("vocab-size", default=None, ge=2)
    allow_pickle: bool = _input("allow-pickle", default=False)
    dataset: str | None = _input("dataset", default=None)
    dataset_factory: str | None = _input("dataset-factory", default=None)
    dataset_kwargs: dict[str, Any] = _input("dataset-kwargs", default_factory=dict)
    slice_fn: str | None = _input("slice-fn", default=None)
    tokenizer: str = _input("tokenizer", default="bytes")
    context_length: int | None = _input("context-length", default=None, ge=2)
    stride: int | None = _input("stride", default=None, ge=1)
    token_dtype: str | None = _input("token-dtype", default=None)
    image_size: str | None = _input("image-size", default=None)
    normalize: str | None = _input("normalize", default=None)
    threshold: float = _input("threshold", default=0.01, ge=0, allow_inf_nan=False)
    metrics: tuple[str, ...] | None = _input("metrics", default=None)
    gate: tuple[str, ...] | None = _input("gate", default=None)
    tolerances: dict[str, MetricTolerance] = _input("metric-tolerances", default_factory=dict)
    bounds: dict[str, MetricBound] = _input("metric-bounds", default_factory=dict)
    metrics_module: str | None = _input("metrics-module", default=None)
    significance: SignificanceMode = _input("significance", default="gate")
    alpha: float = _input("alpha", default=0.05, gt=0, lt=1)
    resamples: int = _input("resamples", default=2000, ge=100, le=100_000)
    seed: int = _input("seed", default=0, ge=0, le=2**32 - 1)
    gate_slices: tuple[str, ...] = _input("gate-slices", default=())
    min_slice_size: int = _input("min-slice-size", default=200, ge=1)
    # The repository's config file (default: .regress-action.yml in the workspace, if any);
    # read by `config_file.load_action_inputs` before these settings are validated.
    config: Path | None = _input("config", default=None)
    db_url: str = _input("db-url", default=DEFAULT_DB_URL, min_length=1)
    github_token: SecretStr | None = _input("github-token", default=None)
    comment: CommentMode = _input("comment", default="update")
    # The comment's lifecycle: when it is written, what happens to older ones and to a sticky
    # comment once a run is clean, and the artifact its footer points to.
    comment_on: CommentOn = _input("comment-on", default="always")
    hide_previous: bool = _input("hide-previous", default=False)
    on_clean: OnClean = _input("on-clean", default="keep")
    artifact_name: str | None = _input("artifact-name", default=None, max_length=255)
    commit_comment: bool = _input("commit-comment", default=False)
    report_name: str = _input("report-name", default="default")
    fail_on_regression: bool = _input("fail-on-regression", default=True)
    # The commit recorded with the runs and the comparison (default: from the event).
    commit: str | None = _input("commit", default=None, max_length=200)
    json_path: Path | None = _input("json-path", default=None)
    markdown_path: Path | None = _input("markdown-path", default=None)
    records_path: Path | None = _input("records-path", default=None)
    device: str = _input("device", default="auto")
    precision: Precision = _input("precision", default="fp32")
    batch_size: int = _input("batch-size", default=64, ge=1)
    max_examples: int | None = _input("max-examples", default=None, ge=1)
    workers: int | None = _input("workers", default=None, ge=0)
    # Read the baseline's records from a stored evaluation with the same cache key.
    cache: bool = _input("cache", default=True)

    @field_validator("metrics", "gate", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return split_list(value) or None
        return value

    @field_validator("gate_slices", mode="before")
    @classmethod
    def _split_slices(cls, value: Any) -> Any:
        return split_list(value) if isinstance(value, str) else value

    @field_validator("tolerances", mode="before")
    @classmethod
    def _tolerances(cls, value: Any) -> Any:
        return parse_tolerances(value) if isinstance(value, str) else value

    @field_validator("bounds", mode="before")
    @classmethod
    def _bounds(cls, value: Any) -> Any:
        return parse_bounds(value) if isinstance(value, str) else value

    @field_validator(
        "factory_kwargs",
        "baseline_factory_kwargs",
        "candidate_factory_kwargs",
        "dataset_kwargs",
        mode="before",
    )
    @classmethod
    def _kwargs(cls, value: Any) -> Any:
        return parse_json_object(value) if isinstance(value, str) else value

    @field_validator("*", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        # A YAML block scalar (`dataset: |`) ends in a newline; no input means its spaces.
        return value.strip() if isinstance(value, str) else value

    @field_validator(
        "comment",
        "significance",
        "task",
        "modality",
        "device",
        "precision",
        "mode",
        "comment_on",
        "on_clean",
        mode="before",
    )
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("report_name")
    @classmethod
    def _marker_safe(cls, value: str) -> str:
        return check_report_name(value)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return check_device(value)

    @model_validator(mode="after")
    def _runs_given(self) -> Self:
        candidate = (self.candidate_run_id, self.candidate_checkpoint)
        if self.mode == "evaluate" and candidate != (None, None):
            raise ValueError(
                "inputs candidate-run-id / candidate-checkpoint: mode evaluate evaluates one "
                "model, set by baseline-run-id or baseline-checkpoint; leave the candidate "
                "unset, or use mode compare"
            )
        for side in self.sides():
            run_id = getattr(self, f"{side}_run_id")
            checkpoint = getattr(self, f"{side}_checkpoint")
            if (run_id is None) == (checkpoint is None):
                raise ValueError(
                    f"inputs {side}-run-id / {side}-checkpoint: set exactly one of them "
                    f"(a run id from the ExperimentDB, or a checkpoint path to register)"
                )
        return self

    def sides(self) -> tuple[str, ...]:
        """The models this mode runs: both, or the baseline alone (`mode: evaluate`)."""
        return ("baseline",) if self.mode == "evaluate" else ("baseline", "candidate")

    @model_validator(mode="after")
    def _eval_set_given(self) -> Self:
        if (self.dataset is None) == (self.dataset_factory is None):
            raise ValueError(
                "inputs dataset / dataset-factory: set one of them (a built-in name or a path, "
                "or a function returning the eval set)"
            )
        return self

    @model_validator(mode="after")
    def _default_report_paths(self) -> Self:
        # In a folder of their own, named after the report: matrix jobs do not overwrite each
        # other's files, and the artifact upload step takes one folder.
        folder = Path("regress-action")
        self.json_path = self.json_path or folder / f"{_slug(self.report_name)}.json"
        self.markdown_path = self.markdown_path or folder / f"{_slug(self.report_name)}.md"
        return self


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "default"


class RunnerEnv(BaseSettings):
    """What the runner tells every step through `GITHUB_*` variables and `RUNNER_TEMP` (none is
    required locally)."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", case_sensitive=False)

    github_api_url: str = "https://api.github.com"  # GHES sets https://HOST/api/v3
    github_server_url: str = "https://github.com"
    github_repository: str | None = None
    github_event_name: str | None = None
    github_event_path: Path | None = None
    github_sha: str | None = None
    github_output: Path | None = None
    github_step_summary: Path | None = None
    github_run_id: str | None = None
    github_run_attempt: str | None = None
    github_graphql_url: str | None = None  # GHES: https://HOST/api/graphql
    github_workspace: Path | None = None  # the checkout; the current folder when unset
    runner_temp: Path | None = None  # the runner's temporary folder, emptied after each job

    def workspace_roots(self) -> tuple[Path, ...]:
        """The folders the Action's files may be read from and written to, links resolved."""
        roots = [self.github_workspace or Path.cwd()]
        if self.runner_temp is not None:
            roots.append(self.runner_temp)
        return tuple(Path(os.path.realpath(root)) for root in roots)

    def run_url(self) -> str | None:
        if self.github_repository and self.github_run_id:
            repo_url = f"{self.github_server_url}/{self.github_repository}"
            return f"{repo_url}/actions/runs/{self.github_run_id}"
        return None


class ClientTuning(BaseSettings):
    """Timeouts, retries and throttling of the GitHub client (`REGRESS_ACTION_GITHUB_*`).

    Production defaults keep PyGithub's polite throttling but bound every wait, so a step never
    hangs: everything sent for one comment (retries, Retry-After and rate-limit waits included)
    fits in `comment_budget` seconds, at most two minutes. The test-suite sets the waits to 0.
    """

    model_config = SettingsConfigDict(
        env_prefix="REGRESS_ACTION_GITHUB_", env_ignore_empty=True, extra="ignore"
    )

    timeout: int = Field(default=20, ge=1)
    comment_budget: float = Field(default=120.0, gt=0, le=120)
    retries: int = Field(default=3, ge=0, le=10)
    backoff_factor: float = Field(default=1.0, ge=0)
    secondary_rate_wait: float = Field(default=30.0, ge=0)
    max_rate_limit_wait: float = Field(default=120.0, ge=0)
    seconds_between_requests: float = Field(default=0.25, ge=0)
    seconds_between_writes: float = Field(default=1.0, ge=0)


def input_names() -> dict[str, str]:
    """action.yml input name -> ActionInputs field name."""
    names: dict[str, str] = {}
    for field_name, info in ActionInputs.model_fields.items():
        extra = info.json_schema_extra
        assert isinstance(extra, dict)
        names[str(extra["input"])] = field_name
    return names


def input_label(field_name: str) -> str:
    """How a workflow names an ActionInputs field in an error: `input metric-tolerances`."""
    for name, field in input_names().items():
        if field == field_name:
            return f"input {name}"
    return f"input {field_name.replace('_', '-')}"


# The CLI flag of an input whose field name does not spell it (`db_url` is `--db`).
_CLI_FLAGS = {
    "db_url": "--db",
    "tolerances": "--tolerance",
    "bounds": "--bound",
    "json_path": "--json-out",
    "markdown_path": "--markdown-out",
}
# A message naming the database's source the CLI's way names the one input instead.
_CLI_PHRASES = {"--db / REGRESS_DB": "--db", "--metrics / metrics": "--metrics"}


def flag_inputs() -> dict[str, str]:
    """CLI flag -> the Action input that sets the same option (`--db` -> `db-url`,
    `--factory` -> `model-factory`): one mapping for every message the Action prints."""
    return {
        _CLI_FLAGS.get(field, "--" + field.replace("_", "-")): name
        for name, field in input_names().items()
    }


_FLAG = re.compile(r"(?<![\w-])(pass )?(--[a-z][a-z0-9-]*)( [\w.]+)?")


def name_inputs(message: str) -> str:
    """`message` with every CLI flag that has an Action input named as that input: the layers
    below the front ends speak of `--allow-pickle` and `--vocab-size`, the Action's user sets
    `allow-pickle: true` and `vocab-size`."""
    for phrase, flag in _CLI_PHRASES.items():
        message = message.replace(phrase, flag)
    inputs, fields = flag_inputs(), input_names()

    def swap(match: re.Match[str]) -> str:
        passed, flag, value = match.group(1), match.group(2), match.group(3) or ""
        name = inputs.get(flag)
        if name is None:
            return match.group(0)
        if passed and ActionInputs.model_fields[fields[name]].annotation is bool:
            return f"set input {name}: true{value}"
        if passed and value:  # "pass --vocab-size 300"
            return f"set input {name}:{value}"
        return f"{passed or ''}input {name}{value}"

    return _FLAG.sub(swap, message)


_S = TypeVar("_S", bound=BaseSettings)


def load(cls: type[_S], **values: Any) -> _S:
    """Read settings from the environment (under `values`, keyed by their variables: a config
    file's); a bad value is one ConfigError naming the input."""
    try:
        return cls(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(cls, exc)) from None
    except SettingsError as exc:  # raised before validation, e.g. an undecodable value
        raise ConfigError(str(exc)) from None


def load_inputs() -> ActionInputs:
    return load(ActionInputs)


def _describe(cls: type[BaseSettings], exc: ValidationError) -> str:
    error = exc.errors()[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "bool_parsing":
        message = "use true or false"
    loc = [str(part) for part in error["loc"]]
    if not loc:  # a model-level rule; its message names the inputs itself
        return message
    if error["type"] == "missing":
        return f"{_source_name(cls, loc[0])} is required: set it in the step's `with:`"
    got = error.get("input")
    shown = "" if got is None or isinstance(got, Mapping) else f" (got {str(got)[:80]!r})"
    return f"{_source_name(cls, loc[0])}: {message}{shown}"


def _source_name(cls: type[BaseSettings], loc: str) -> str:
    """The name the user wrote: `input fail-on-regression`, or an environment variable."""
    key = loc.lower().removeprefix("input_")
    if cls is ActionInputs:
        for name, field_name in input_names().items():
            if key in {name, name.replace("-", "_"), field_name}:
                return f"input {name}"
    prefix = str(cls.model_config.get("env_prefix") or "")
    variable = loc if loc.upper().startswith(prefix.upper()) and prefix else prefix + loc
    return f"environment variable {variable.upper()}"
