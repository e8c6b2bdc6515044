"""The repository's config file, `.regress-action.yml`: the verdict, eval-set and run options a
repository keeps in one place instead of repeating them in every workflow and command line (the
same keys may be written in TOML: `.regress-action.toml`, or pyproject.toml's
`[tool.regress-action]` table).

`ConfigFile` is the file's model (unknown keys are errors, with the closest valid key
suggested); `read_config` reads and validates one file, an error being one ConfigError naming
the file, the key path and the fix. `apply_to_namespace` (the CLI) and `action_values` (the
Action) put its values under what the user gave explicitly: a flag or an input the user set
wins over the file, the file over the built-in defaults; per-metric tolerances and bounds merge
(a flag's entry replaces the file's entry of the same metric).
Imports pydantic, PyYAML (when a file is read), `errors`, `files`, `settings` and `spec` (no
torch, SQL or GitHub).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from .errors import ConfigError
from .files import outside
from .settings import ActionInputs, RunnerEnv, input_names, load
from .spec import (
    DataOptions,
    MetricBound,
    MetricTolerance,
    Precision,
    SignificanceMode,
    TokenDtype,
    check_device,
    check_module_name,
    check_report_name,
    parse_bounds,
    parse_tolerances,
)

# The file read when no path is given, in the current folder (the workspace in the Action).
CONFIG_FILE = ".regress-action.yml"
# The same keys in TOML, in a file of their own or in pyproject.toml's [tool.regress-action].
TOML_FILE = ".regress-action.toml"
PYPROJECT, PYPROJECT_TABLE = "pyproject.toml", "[tool.regress-action]"
# Where a config's values came from when there is no file.
DEFAULTS = "defaults"
# A file's eval set is one of these; a flag or input naming either replaces both.
_EVAL_SET = ("dataset", "dataset_factory")
# Options whose per-metric entries merge with the flag's (the flag's entry wins).
_PER_METRIC = ("tolerances", "bounds")


def _tolerance(value: Any) -> Any:
    """A tolerance as a file writes it: `0.02` (absolute), `"5%"` (relative), `"0.02|5%"`
    (both: the larger applies) or `{abs: 0.02, rel: 0.05}`."""
    if isinstance(value, bool):
        raise ValueError("give a number (0.02), a percentage ('5%') or {abs: .., rel: ..}")
    if isinstance(value, int | float):
        return {"abs": value}
    if isinstance(value, str):
        try:
            return parse_tolerances(f"metric={value}")["metric"]
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("metric: ")) from None
        except KeyError:
            raise ValueError("give a number (0.02) or a percentage ('5%')") from None
    return value


_TOLERANCE_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0, "description": "absolute tolerance"},
        {
            "type": "string",
            "pattern": r"^\s*[0-9.eE+-]+%?\s*(\|\s*[0-9.eE+-]+%?\s*)?$",
            "description": "'5%' (of |baseline|), '0.02' or both: '0.02|5%'",
        },
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "abs": {"type": "number", "minimum": 0},
                "rel": {"type": "number", "minimum": 0},
            },
        },
    ]
}
Tolerance = Annotated[
    MetricTolerance, BeforeValidator(_tolerance), WithJsonSchema(_TOLERANCE_SCHEMA)
]


def _bound(value: Any) -> Any:
    """A bound as a file writes it: `">=0.9"`, `"<=0.05"` or `{min: 0.9, max: 0.99}`."""
    hint = "give '>=0.9' (a floor), '<=0.05' (a ceiling) or {min: .., max: ..}"
    if isinstance(value, str):
        try:
            return parse_bounds(f"metric{value.strip()}")["metric"]
        except (ValueError, KeyError):
            raise ValueError(f"{value!r} is not a bound; {hint}") from None
    if isinstance(value, int | float):
        raise ValueError(f"{value!r} has no side; {hint}")
    return value


_BOUND_SCHEMA = {
    "anyOf": [
        {
            "type": "string",
            "pattern": r"^\s*(>=|<=|≥|≤)\s*\S+\s*$",
            "description": "'>=0.9' (a floor) or '<=0.05' (a ceiling)",
        },
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {"min": {"type": "number"}, "max": {"type": "number"}},
        },
    ]
}
Bound = Annotated[MetricBound, BeforeValidator(_bound), WithJsonSchema(_BOUND_SCHEMA)]


def _names(value: Any) -> Any:
    """`[a, b]` or `"a, b"`."""
    if isinstance(value, str):
        return [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]
    return value


Names = Annotated[
    list[str],
    BeforeValidator(_names),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "array", "items": {"type": "string"}},
                {"type": "string", "description": "comma-separated"},
            ]
        }
    ),
]


def _data_option(name: str) -> Any:
    """A before-validator checking one eval-set option as DataOptions does (one source of
    truth for `image_size: 224`, `normalize: imagenet`, a factory's spelling, ...)."""

    def check(value: Any) -> Any:
        if value is None:
            return None
        try:
            return getattr(DataOptions.model_validate({name: value}), name)
        except ValidationError as exc:
            raise ValueError(_message(exc.errors()[0])) from None

    return BeforeValidator(check)


ImageSize = Annotated[
    tuple[int, int],
    _data_option("image_size"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "array", "items": {"type": "integer", "minimum": 1}, "maxItems": 2},
                {"type": "string", "description": "HEIGHT,WIDTH"},
            ]
        }
    ),
]
Normalize = Annotated[
    tuple[tuple[float, ...], tuple[float, ...]],
    _data_option("normalize"),
    # runs first (the last before-validator runs first): {mean, std} as DataOptions reads it
    BeforeValidator(lambda value: json.dumps(value) if isinstance(value, Mapping) else value),
    WithJsonSchema(
        {
            "anyOf": [
                {"const": "imagenet"},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["mean", "std"],
                    "properties": {
                        "mean": {"type": "array", "items": {"type": "number"}},
                        "std": {"type": "array", "items": {"type": "number"}},
                    },
                },
            ]
        }
    ),
]
DatasetFactory = Annotated[str, _data_option("dataset_factory")]
SliceFn = Annotated[str, _data_option("slice_fn")]
Tokenizer = Annotated[str, _data_option("tokenizer")]


class ConfigFile(BaseModel):
    """`.regress-action.yml`: every key is optional; a key left out (or null) keeps the
    built-in default, and a flag or Action input the user sets wins over it."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="regress-action config file (.regress-action.yml)",
        use_attribute_docstrings=True,
    )

    # ---- the verdict (VerdictConfig)
    threshold: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """Absolute tolerance of every metric without its own (default 0.01)."""
    tolerances: dict[str, Tolerance] | None = None
    """Per-metric tolerance: 0.02 (absolute), '5%' (of |baseline|), '0.02|5%' (the larger) or
    {abs: .., rel: ..}."""
    bounds: dict[str, Bound] | None = None
    """Absolute floor / ceiling on the candidate's value: '>=0.9', '<=0.05' or {min: .., max: ..};
    a value outside it fails like a regression."""
    metrics: Names | None = None
    """Metrics to report (default: the task's default set and the custom ones)."""
    gate: Names | None = None
    """Metrics that can fail the job, or primary / all."""
    significance: SignificanceMode | None = None
    """gate (default), margin, report or off."""
    alpha: float | None = Field(default=None, gt=0, lt=1)
    """Significance level, Bonferroni-adjusted across the gated metrics (default 0.05)."""
    resamples: int | None = Field(default=None, ge=100, le=100_000)
    """Bootstrap resamples (default 2000)."""
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    """Seed of the resampling (default 0)."""
    metrics_module: str | None = None
    """Module importable from the repository root defining metrics(task) -> list[Metric]."""
    gate_slices: Names | None = None
    """Slices of the eval set whose regressions fail the job: all, none (default) or names."""
    min_slice_size: int | None = Field(default=None, ge=1)
    """A slice with fewer examples is reported but not gated (default 200)."""

    # ---- the eval set (DataOptions)
    dataset: str | None = None
    """Built-in name or a path (relative to the working directory); or dataset_factory."""
    dataset_factory: DatasetFactory | None = None
    """'package.module:callable' returning the eval set (a torch Dataset)."""
    dataset_kwargs: dict[str, Any] | None = None
    """Keyword arguments of dataset_factory."""
    slice_fn: SliceFn | None = None
    """'package.module:callable' called as fn(index, input, target) on every example, returning
    its slice name; instead of the data's slice key."""
    tokenizer: Tokenizer | None = None
    """Text: bytes (default), model, or the path of a tokenizer.json."""
    context_length: int | None = Field(default=None, ge=2)
    """lm: tokens per sliding window."""
    stride: int | None = Field(default=None, ge=1)
    """lm: tokens the window moves by."""
    token_dtype: TokenDtype | None = None
    """lm: dtype of the ids in a raw .bin token file."""
    image_size: ImageSize | None = None
    """Images: resize to [HEIGHT, WIDTH] (or one SIZE)."""
    normalize: Normalize | None = None
    """Images: imagenet, or {mean: [..], std: [..]} after scaling to [0, 1]."""

    # ---- the run
    batch_size: int | None = Field(default=None, ge=1)
    """Evaluation batch size (default 64)."""
    max_examples: int | None = Field(default=None, ge=1)
    """Evaluate only the first N examples."""
    workers: int | None = Field(default=None, ge=0)
    """DataLoader worker processes."""
    device: str | None = None
    """auto (default), cpu, cuda or cuda:N."""
    precision: Precision | None = None
    """fp32 (default), bf16 or fp16 (CUDA only)."""
    report_name: str | None = None
    """Names the comparison series and its sticky PR comment (default: default)."""
    fail_on_regression: bool | None = None
    """Exit 1 when a gated metric regressed (the Action's default: true)."""

    @field_validator("metrics_module")
    @classmethod
    def _module(cls, value: str | None) -> str | None:
        return None if value is None else check_module_name(value)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        return None if value is None else check_device(value)

    @field_validator("report_name")
    @classmethod
    def _report_name(cls, value: str | None) -> str | None:
        return None if value is None else check_report_name(value)

    def values(self) -> dict[str, Any]:
        """The keys the file sets, as the options' attributes carry them."""
        values = self.model_dump(exclude_none=True)
        for name in ("metrics", "gate", "gate_slices"):
            if name in values:
                values[name] = tuple(values[name])
        for name in _PER_METRIC:
            if name in values:
                values[name] = dict(getattr(self, name) or {})
        return values


def config_json_schema() -> dict[str, Any]:
    """The JSON schema of the config file (`regress_action/schemas/config.schema.json`)."""
    return ConfigFile.model_json_schema(mode="validation")


class LoadedConfig(BaseModel):
    """A config file read, or none: `source` is its path as given, or "defaults"."""

    model_config = ConfigDict(frozen=True)

    source: str = DEFAULTS
    file: ConfigFile = Field(default_factory=ConfigFile)


# ---------------------------------------------------------------- reading


def find_config(given: Path | str | None, folder: Path | None = None) -> Path | None:
    """The config file to read: `given` (which must exist), else the first in `folder` (the
    current folder) of `.regress-action.yml`, `.regress-action.toml` and a `pyproject.toml`
    with a `[tool.regress-action]` table; None when there is none."""
    if given is not None and str(given).strip():
        return Path(str(given).strip())
    folder = folder or Path()
    for name in (CONFIG_FILE, TOML_FILE):
        if (folder / name).is_file():
            return folder / name
    pyproject = folder / PYPROJECT
    try:
        if pyproject.is_file() and PYPROJECT_TABLE in pyproject.read_text(encoding="utf-8"):
            return pyproject
    except (OSError, UnicodeDecodeError):
        return None  # not a usable pyproject.toml: not a config file either
    return None


# A config file is a few keys: a larger one is refused before it is parsed.
MAX_BYTES = 1 << 20


def _loader() -> type[Any]:
    """PyYAML's SafeLoader, refusing aliases (`*name`): a few lines of anchors can expand to
    billions of values once validated."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    "anchors and aliases (*name) are not supported: write the value out",
                    event.start_mark,
                )
            return super().compose_node(parent, index)

    return Loader


def read_config(path: Path | None, label: str = "--config") -> LoadedConfig:
    """The file at `path` read and validated (no file: the defaults). Raises ConfigError,
    one line naming the file (with line:column for a YAML error), the key path and the fix;
    `label` names the option that chose the file."""
    if path is None:
        return LoadedConfig()
    shown = str(path)
    try:
        if path.exists() and not path.is_file() and not path.is_dir():
            raise ConfigError(f"{label}: {shown!r} is not a regular file; give the config file")
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{label}: no config file {shown!r} (relative to {Path.cwd()}); check the path"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{label}: {shown!r} is a folder; give the config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {shown!r} ({exc.strerror})") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{shown}: over {MAX_BYTES // 1024} KiB; a config file is a few keys")
    if path.suffix == ".toml":
        return _from_toml(path, text)
    import yaml  # PyYAML: only when there is a YAML file

    try:
        raw = yaml.load(text, Loader=_loader())  # a SafeLoader, without aliases
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark is not None else shown
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix the syntax there") from None
    except RecursionError:
        raise ConfigError(f"{shown}: nested too deeply to read; flatten the file") from None
    if raw is None:  # an empty file (or only comments): every default
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{shown}: the file must be a mapping of keys (threshold: 0.02, ...), "
            f"not a {type(raw).__name__}"
        )
    return _validated(shown, raw)


def _validated(shown: str, raw: dict[str, Any], prefix: str = "") -> LoadedConfig:
    try:
        return LoadedConfig(source=shown, file=ConfigFile.model_validate(raw))
    except ValidationError as exc:
        raise ConfigError(f"{shown}: {prefix}{describe(exc)}") from None


def _from_toml(path: Path, text: str) -> LoadedConfig:
    """`.regress-action.toml`, or the `[tool.regress-action]` table of a pyproject.toml."""
    import tomllib

    shown = str(path)
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        where = f"{shown}:{found[1]}:{found[2]}" if found else shown
        problem = message[: found.start()].strip() if found else message
        raise ConfigError(f"{where}: not valid TOML ({problem}); fix the syntax there") from None
    except RecursionError:
        raise ConfigError(f"{shown}: nested too deeply to read; flatten the file") from None
    if path.name != PYPROJECT:
        return _validated(shown, raw)
    table = raw.get("tool", {}).get("regress-action")
    if not isinstance(table, dict):
        raise ConfigError(
            f"{shown}: no {PYPROJECT_TABLE} table; put the settings under it, or in {CONFIG_FILE}"
        )
    return _validated(shown, table, "tool.regress-action.")


def _message(error: Mapping[str, Any]) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


# The model whose keys a key path's last part is among, by the path's first part.
_NESTED: dict[str, type[BaseModel]] = {"tolerances": MetricTolerance, "bounds": MetricBound}


def describe(exc: ValidationError) -> str:
    """`tolerances.perplexity: <problem>; <fix>` for the first error of a ConfigFile."""
    error = exc.errors()[0]
    loc = [str(part) for part in error.get("loc", ())]
    # Errors inside a union or an annotated type carry the type's tag; the key path has none.
    loc = [part for part in loc if not _is_tag(part)]
    where = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key; {_suggest(loc)}"
    got = error.get("input")
    shown = "" if isinstance(got, Mapping | list) or got is None else f" (got {str(got)[:60]!r})"
    return f"{where}: {_message(error)}{shown}; fix the value (docs/regress-action.example.yml)"


def _is_tag(part: str) -> bool:
    return part.startswith(("function-", "tuple[", "list[", "dict[", "json-or-python"))


def _suggest(loc: list[str]) -> str:
    key = loc[-1]
    model: type[BaseModel] = ConfigFile
    if len(loc) == 3 and loc[0] in _NESTED:
        model = _NESTED[loc[0]]
    valid = list(model.model_fields)
    close = difflib.get_close_matches(key.replace("-", "_"), valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"valid keys: {', '.join(valid)}"


# ---------------------------------------------------------------- precedence


def file_values(
    loaded: LoadedConfig, explicit: Iterable[str], given: Mapping[str, Any]
) -> dict[str, Any]:
    """The values the file contributes under `explicit` (the option names the user set):
    a file key whose option was set is dropped, the eval set as one (a flag naming a dataset
    drops the file's factory too), and per-metric maps merge with `given`'s (the user's entry
    of a metric wins)."""
    explicit = set(explicit)
    values = loaded.file.values()
    if explicit & set(_EVAL_SET):
        for name in _EVAL_SET:
            values.pop(name, None)
    for name in list(values):
        if name in _PER_METRIC:
            if name in explicit:
                values[name] = {**values[name], **dict(given.get(name) or {})}
        elif name in explicit:
            del values[name]
    return values


def apply_to_namespace(args: Any, loaded: LoadedConfig, explicit: Iterable[str]) -> None:
    """Set the file's values on a parsed namespace, for the options its command has (a key the
    command does not take is left alone: `evaluate` has no `threshold`)."""
    explicit = set(explicit)
    given = vars(args)
    applied: set[str] = set()
    for name, value in file_values(loaded, explicit, given).items():
        if name in given:
            setattr(args, name, value)
            applied.add(name)
    args.config_source = loaded.source
    args.config_keys = applied - explicit  # an error about one names the file's key


def action_values(
    loaded: LoadedConfig,
    explicit: Iterable[str],
    fields: Iterable[str],
    given: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The file's values as the Action's settings take them (`fields`: its field names;
    `given`: the per-metric maps the inputs set, merged over the file's)."""
    values = file_values(loaded, explicit, given or {})
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in fields:
            continue
        if name == "image_size":
            value = ",".join(str(size) for size in value)
        elif name == "normalize":
            mean, std = value
            value = json.dumps({"mean": list(mean), "std": list(std)})
        out[name] = value
    return out


def check_inside(path: Path, roots: tuple[Path, ...], label: str) -> None:
    """The Action reads a config file only inside the workspace (or RUNNER_TEMP), every link
    resolved. Raises ConfigError naming `label`."""
    real = outside(str(path), roots)
    if real is None:
        return
    via = "" if str(real) == os.path.abspath(path) else f", through a symlink to {str(real)!r}"
    raise ConfigError(
        f"{label}: {str(path)!r} is outside the workspace ({roots[0]}{via}); "
        "use a config file inside the repository checkout"
    )


# ---------------------------------------------------------------- the Action


def _set_inputs(environ: Mapping[str, str]) -> dict[str, str]:
    """The ActionInputs fields the workflow set, with their raw values: an input the runner
    passes empty is unset, and so is one equal to its action.yml default (the runner passes a
    declared default as if it were set; the file then applies)."""
    env = {key.upper(): value for key, value in environ.items()}
    given: dict[str, str] = {}
    for name, field in input_names().items():
        upper = f"INPUT_{name.upper()}"
        raw = (env.get(upper) or env.get(upper.replace("-", "_")) or "").strip()
        if not raw:
            continue
        info = ActionInputs.model_fields[field]
        default = info.get_default(call_default_factory=True)
        try:
            value = TypeAdapter(info.annotation or str).validate_python(raw)
        except (ValidationError, TypeError):
            given[field] = raw
            continue
        if isinstance(value, str) and isinstance(default, str):
            value, default = value.lower(), default.lower()
        if value != default:
            given[field] = raw
    return given


def load_action_inputs(runner: RunnerEnv) -> tuple[ActionInputs, LoadedConfig]:
    """The Action's inputs over its config file (`input config`, else `.regress-action.yml` in
    the workspace when there is one) and the file read. The file must be inside the
    workspace; an input the workflow set wins over the file."""
    label = "input config"
    environ = os.environ
    raw = next((v for k, v in environ.items() if k.upper() == "INPUT_CONFIG" and v.strip()), None)
    path = find_config(raw)
    if path is not None:
        check_inside(path, runner.workspace_roots(), label)
    loaded = read_config(path, label)
    set_inputs = _set_inputs(environ)
    given: dict[str, Any] = {}
    unparsed: set[str] = set()
    for name, parse in (("tolerances", parse_tolerances), ("bounds", parse_bounds)):
        if name in set_inputs:
            try:
                given[name] = parse(set_inputs[name])
            except ValueError:  # left to the settings, whose error names the input
                unparsed.add(name)
    values = action_values(loaded, set_inputs, set(ActionInputs.model_fields), given)
    for name in unparsed:
        values.pop(name, None)
    inputs_of = {field: name for name, field in input_names().items()}
    variables = {f"INPUT_{inputs_of[field].upper()}": value for field, value in values.items()}
    return load(ActionInputs, **variables), loaded
