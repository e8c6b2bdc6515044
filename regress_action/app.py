"""Orchestration: one comparison from run ids to a recorded, rendered report.

Receives its collaborators (the ExperimentDB) as parameters so tests can pass their own.
The torch layer (data, models, engine) is imported inside the functions that evaluate, so that
`regress-action --help`, `runs list` and `publish` never import torch.
Order: evaluate → verdict → ExperimentDB (one transaction) → JSON artifact → Markdown; output
paths are checked before the (slow) evaluation so a bad path cannot waste a run or leave a
recorded comparison without its files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .compare import ReportContext, build_report, metric_specs
from .errors import ConfigError
from .files import StagedFile, check_distinct, check_writable
from .records_file import check_records_path
from .render import TREND_POINTS, render_markdown
from .report import ConfigInfo, DatasetInfo, Report, RunInfo
from .slices import SLICE_COLUMN, gating
from .spec import (
    CheckpointFormat,
    DataOptions,
    EvalConfig,
    Precision,
    RunCreate,
    RunRecord,
    TaskSpec,
    VerdictConfig,
)

if TYPE_CHECKING:
    import torch

    from .data import EvalSet
    from .engine import EngineResult, PassOptions
    from .evaluation import EvaluateRequest, RecordsCache
    from .records import Columns, PairedRecords
    from .report import EvaluationReport
    from .store import ExperimentDB
    from .tasks import Adapter


@dataclass(frozen=True)
class CompareRequest:
    """Everything one comparison needs besides its collaborators."""

    baseline_run_id: int
    candidate_run_id: int
    dataset: str
    verdict: VerdictConfig = field(default_factory=VerdictConfig)
    batch_size: int = 64
    max_examples: int | None = None
    device: str = "auto"
    precision: Precision = "fp32"
    workers: int | None = None  # DataLoader workers; None: the engine's default
    data: DataOptions = field(default_factory=DataOptions)  # tokenizer, windows, images, ...
    report_name: str = "default"
    json_path: Path | None = None
    markdown_path: Path | None = None
    records_path: Path | None = None  # every example's records (.parquet / .npz)
    config_source: str = "defaults"  # the config file the options were read with
    commit: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False  # run code shipped in a Hugging Face folder (auto_map)
    record: bool = True
    # Take the baseline's records from a stored evaluation with the same cache key, when there
    # is one (`evaluation.RecordsCache`); False: evaluate both models (`--no-cache`).
    cache: bool = True
    # The commit the baseline's checkpoint was read from (the Action's baseline-checkpoint-ref).
    baseline_ref: str | None = None


@dataclass
class CompareOutcome:
    report: Report
    markdown: str


@dataclass
class Compared:
    """A comparison's report (not yet recorded) and the paired records it was built from, with
    how the user finds each example (for the records file)."""

    report: Report
    records: PairedRecords
    key: Callable[[int], str] | None = None


@dataclass(frozen=True)
class Outputs:
    """Where a finished report goes: the ExperimentDB and the artifact files."""

    db: ExperimentDB | None = None
    json_path: Path | None = None
    markdown_path: Path | None = None
    records_path: Path | None = None
    # Evaluation rows (report, `.npz` records) recorded in the comparison's transaction.
    evaluations: Sequence[tuple[EvaluationReport, bytes | None]] = ()


def check_outputs(paths: dict[str, Path | None], db: ExperimentDB | None) -> None:
    """Report paths (named as the user gave them) writable, distinct, and not the database's
    own files."""
    for what, path in paths.items():
        check_writable(path, what)
    check_distinct(paths, db.local_files() if db is not None else {})


def run_info(run: RunRecord, ref: str | None = None) -> RunInfo:
    """A run as the report shows it; `ref`: the commit its checkpoint was read from."""
    return RunInfo(
        run_id=run.id,
        name=run.name,
        checkpoint=run.source.checkpoint,
        sha256=run.source.sha256,
        format=run.source.format,
        git_sha=run.git_sha,
        checkpoint_ref=ref,
    )


def dataset_info(eval_set: EvalSet) -> DatasetInfo:
    return DatasetInfo(
        name=eval_set.name,
        fingerprint=eval_set.fingerprint,
        n=eval_set.n,
        class_names=eval_set.class_names,
        tokenizer=None if eval_set.tokenizer is None else eval_set.tokenizer.name,
    )


def _describe(task: TaskSpec) -> str:
    if task.task == "lm":
        return f"lm (vocab_size={task.vocab_size})"
    return f"classification (num_classes={task.num_classes})"


def evaluate_models(
    baseline: torch.nn.Module,
    candidate: torch.nn.Module,
    eval_cfg: EvalConfig,
    task: TaskSpec,
    context: ReportContext,
    adapter: Adapter | None = None,
    model_dirs: tuple[Path | None, Path | None] = (None, None),
    cache: RecordsCache | None = None,
) -> Compared:
    """Load the eval set, run both models in one pass and build the report (not yet recorded).
    With `cache`, its pass: the baseline's records may come from a stored evaluation.

    `model_dirs`: the baseline's and the candidate's Hugging Face folders, when they are (an
    LM's tokenizer: `model` names the baseline's, and two folders whose tokenizers differ are
    compared on bits per byte alone, each model reading the documents with its own tokenizer).
    """
    from .data import load_eval_set
    from .tasks import adapter_for

    metric_specs(task, context.verdict)  # unknown metric names fail before any work
    options = eval_cfg.data_options()
    if task.modality == "text":
        options = text_options(options, (baseline, candidate), model_dirs, task)
        own = _differing_tokenizers(model_dirs)
        if own is not None and task.task == "lm":
            return _evaluate_across_tokenizers(
                (baseline, candidate), eval_cfg, options, task, context, adapter, own
            )
        if own is not None:
            raise ConfigError(
                f"the baseline ({own[0]}) and the candidate ({own[1]}) have different "
                "tokenizers, so one eval set cannot be read the same way by both; compare "
                "classifiers that share a tokenizer (only an lm can be compared across "
                "tokenizers, on bits per byte)"
            )
    eval_set = load_eval_set(
        eval_cfg.dataset,
        task=task,
        max_examples=eval_cfg.max_examples,
        name=eval_cfg.dataset_name,
        options=options,
    )
    if options.slice_fn is not None:
        eval_set.columns = slice_column(eval_set, options.slice_fn)
    check_gated_slices(eval_set, context.verdict)  # a wrong name fails before the models run
    verdict = lm_verdict(eval_set, task, context.verdict) if task.task == "lm" else None
    result, world_size = (_run_pass if cache is None else cache.run_pass)(
        (baseline, candidate),
        eval_set,
        adapter or adapter_for(task),
        # An image folder's fingerprint comes from the pass's batches.
        pass_options(eval_cfg, observe=eval_set.observe, names=side_names(context)),
        task,
    )
    join_data_columns(result.records, eval_set)
    context = ReportContext(
        task=task,
        dataset=dataset_info(eval_set),
        verdict=verdict or context.verdict,
        baseline=context.baseline,
        candidate=context.candidate,
        report_name=context.report_name,
        commit=context.commit,
        device=result.device,
        world_size=world_size,
        precision=eval_cfg.precision,
    )
    report = build_report(result.records, context, result.duration_s)
    annotate_flips(report, eval_set)
    key = None if eval_set.references is None else (lambda i: eval_set.describe(i).key)
    return Compared(report, result.records, key)


def pass_options(
    eval_cfg: EvalConfig,
    observe: Callable[[Any], None] | None = None,
    names: dict[str, str] | None = None,
) -> PassOptions:
    """How the engine runs over the eval set, as the EvalConfig asks; `names` says which run
    each side is in the engine's errors (`side_names`)."""
    from .engine import PassOptions

    return PassOptions(
        eval_cfg.batch_size,
        eval_cfg.device,
        eval_cfg.progress,
        precision=eval_cfg.precision,
        workers=eval_cfg.workers,
        observe=observe,
        names=names or {},
    )


def side_names(context: ReportContext) -> dict[str, str]:
    """Each side's run as an error names it: `run 3, ckpt/model.safetensors`."""
    names: dict[str, str] = {}
    for side, run in (("baseline", context.baseline), ("candidate", context.candidate)):
        parts = [f"run {run.run_id}" if run.run_id is not None else "", run.checkpoint or ""]
        if any(parts):
            names[side] = ", ".join(part for part in parts if part)
    return names


def text_options(
    options: DataOptions,
    models: tuple[torch.nn.Module, torch.nn.Module],
    model_dirs: tuple[Path | None, Path | None],
    task: TaskSpec,
) -> DataOptions:
    """A text eval set's options made concrete: `tokenizer: model` → the baseline's folder,
    `context_length` → the models' maximum positions (the smaller; when neither says, the
    source's default: 256 for an lm's windows, 512 for a text classifier's truncation); a
    ConfigError for a context a model cannot take, or a tokenizer larger than an lm's
    vocabulary."""
    from .vocab import BYTES, FROM_MODEL, load_tokenizer

    update: dict[str, Any] = {}
    if options.tokenizer == FROM_MODEL:
        if model_dirs[0] is None:
            raise ConfigError(
                "tokenizer 'model' reads the tokenizer saved in the baseline's Hugging Face "
                "folder, but the baseline is not a model folder; pass a tokenizer.json path "
                "or 'bytes'"
            )
        update["tokenizer"] = str(model_dirs[0])
    positions = [(side, _max_positions(m)) for side, m in zip(SIDE_NAMES, models, strict=True)]
    known = [(side, n) for side, n in positions if n is not None]
    if options.context_length is None:
        if known:
            update["context_length"] = min(n for _, n in known)
    else:
        for side, n in known:
            if options.context_length > n:
                raise ConfigError(
                    f"context-length {options.context_length} is more than the {side} model's "
                    f"maximum positions ({n}); pass context-length {n} or less"
                )
    options = options.model_copy(update=update)
    if options.tokenizer != BYTES and isinstance(options.tokenizer, str):
        tokenizer = load_tokenizer(options.tokenizer)
        if task.vocab_size is not None and tokenizer.vocab_size > task.vocab_size:
            raise ConfigError(
                f"tokenizer {tokenizer.name} has {tokenizer.vocab_size} tokens but the models' "
                f"vocab_size is {task.vocab_size}; use the tokenizer the models were trained "
                "with (tokenizer 'model' for a Hugging Face folder)"
            )
    return options


SIDE_NAMES = ("baseline", "candidate")


def _max_positions(model: Any) -> int | None:
    """A Hugging Face model's maximum positions (`config.n_positions` /
    `max_position_embeddings`), None when it does not say."""
    config: Any = getattr(model, "config", None)
    if hasattr(config, "get_text_config"):  # a multimodal config keeps the LM's apart
        config = config.get_text_config()
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _differing_tokenizers(model_dirs: tuple[Path | None, Path | None]) -> tuple[str, str] | None:
    """The two folders, when both hold a tokenizer and the tokenizers differ (vocabulary,
    merges, added tokens); None when they share one or either has none."""
    from .errors import DataError
    from .vocab import load_tokenizer

    if model_dirs[0] is None or model_dirs[1] is None:
        return None
    try:
        first, second = (load_tokenizer(str(folder)) for folder in model_dirs)
    except DataError:  # a folder without a tokenizer: nothing to compare
        return None
    if first.fingerprint == second.fingerprint:
        return None
    return str(model_dirs[0]), str(model_dirs[1])


def _has_bytes(eval_set: EvalSet, task: TaskSpec) -> bool:
    """Whether the eval set knows the bytes of text its tokens cover: a text source's `bytes`
    column, or (a source without data columns) a byte-level vocabulary."""
    from .vocab import BYTE_VOCAB

    if eval_set.columns is None:
        return task.vocab_size == BYTE_VOCAB
    return "bytes" in eval_set.columns


def lm_verdict(eval_set: EvalSet, task: TaskSpec, verdict: VerdictConfig) -> VerdictConfig:
    """The verdict without bits per byte when the eval set has no bytes (token arrays); a
    ConfigError when it was asked for by name."""
    from .tasks import select_metrics

    if _has_bytes(eval_set, task):
        return verdict
    asked = [*(verdict.metrics or ()), *(verdict.gate or ()), *verdict.tolerances, *verdict.bounds]
    if "bits_per_byte" in asked:
        raise ConfigError(
            f"bits_per_byte needs the text the tokens came from, and {eval_set.name} has "
            "none (token ids only); drop bits_per_byte or evaluate a text eval set (.jsonl)"
        )
    names = select_metrics(task, verdict.metrics, verdict.metrics_module)
    return verdict.model_copy(
        update={"metrics": tuple(name for name in names if name != "bits_per_byte")}
    )


CLUSTER_COLUMNS = ("group", "doc")  # data columns naming an example's cluster, first wins


SLICE_FN = "--slice-fn / slice-fn"


def slice_column(eval_set: EvalSet, spec: str) -> dict[str, Any]:
    """The eval set's columns with a `slice` column of `spec`'s results: the user's
    `fn(index, input, target)` (imported from the working directory) called on every example.
    A `slice` column the data already has, a function that raises or a result that is not a
    slice name is one UserError line naming --slice-fn."""
    from .checkpoints import import_callable
    from .errors import DataError
    from .slices import slice_labels
    from .tasks.base import first_line

    columns = dict(eval_set.columns or {})
    if SLICE_COLUMN in columns:
        raise ConfigError(
            f"{SLICE_FN} {spec!r} and the slice key of {eval_set.name} both name the slices; "
            "drop the data's slice key or the slice function"
        )
    fn = import_callable(spec, Path.cwd(), ConfigError, SLICE_FN)
    values = []
    for index in range(eval_set.n):
        example = eval_set.dataset[index]
        pair = isinstance(example, tuple | list) and len(example) == 2
        try:
            values.append(fn(index, *(example if pair else (example, None))))
        except Exception as exc:
            raise DataError(
                f"{SLICE_FN} {spec!r} raised {type(exc).__name__} on example {index}: "
                f"{first_line(exc)}; fix the slice function"
            ) from None
    columns[SLICE_COLUMN] = slice_labels(values, f"{SLICE_FN} {spec!r}")
    return columns


def check_gated_slices(eval_set: EvalSet, verdict: VerdictConfig) -> None:
    """A ConfigError naming --gate-slices when it names a slice the eval set does not have."""
    if not verdict.gate_slices or verdict.gate_slices == ("all",):
        return
    labels = (eval_set.columns or {}).get(SLICE_COLUMN)
    names = [] if labels is None else sorted(set(labels.tolist()))
    gating(dict.fromkeys(names, 0), verdict)


def join_data_columns(records: PairedRecords, eval_set: EvalSet) -> None:
    """Add the eval set's per-example data columns (`data_columns`) to both sides' records. A
    `group` column (the user's: a text-classification line's "group") or else a `doc` column
    (the document a text window came from) becomes the records' clusters: examples of one are
    not independent, so the statistics resample whole clusters. A `slice` column becomes the
    records' slices, each judged on its own (`regress_action.slices`)."""
    if eval_set.columns is None:
        return
    records.baseline = data_columns(records.baseline, records.example_ids, eval_set)
    records.candidate = data_columns(records.candidate, records.example_ids, eval_set)
    for name in CLUSTER_COLUMNS:
        if name in eval_set.columns:
            records.groups = eval_set.columns[name][records.example_ids]
            break
    if SLICE_COLUMN in eval_set.columns:
        records.slices = eval_set.columns[SLICE_COLUMN][records.example_ids]


def data_columns(columns: Columns, example_ids: Any, eval_set: EvalSet) -> dict[str, Any]:
    """One side's columns with the eval set's per-example data columns (e.g. the `bytes` a text
    window's tokens cover) joined by example id; a source with data columns replaces what an
    adapter assumed (bytes = tokens). Cluster and slice columns are not records."""
    joined = dict(columns)
    if eval_set.columns is not None:
        joined.pop("bytes", None)
        for name, values in eval_set.columns.items():
            if name not in CLUSTER_COLUMNS and name != SLICE_COLUMN:
                joined[name] = values[example_ids]
    return joined


def _evaluate_across_tokenizers(
    models: tuple[torch.nn.Module, torch.nn.Module],
    eval_cfg: EvalConfig,
    options: DataOptions,
    task: TaskSpec,
    context: ReportContext,
    adapter: Adapter | None,
    folders: tuple[str, str],
) -> Compared:
    """Two models with different tokenizers, on bits per byte alone: each reads the documents
    with its own tokenizer (`engine.evaluate`, one model at a time); NLL and bytes are summed
    per document and the two sides paired on document ids. `max_examples` counts documents.
    Not under torchrun (a ConfigError on every rank)."""
    import hashlib

    import numpy as np
    from torch.utils.data import TensorDataset

    from .data import load_eval_set
    from .distributed import current
    from .engine import evaluate
    from .records import Records, pair
    from .tasks import adapter_for

    if current() is not None:  # every rank decides the same, so each fails alike
        raise ConfigError(
            f"the baseline ({folders[0]}) and the candidate ({folders[1]}) have different "
            "tokenizers, a comparison run in one process; run it without torchrun"
        )
    verdict = context.verdict
    others = [
        name
        for name in (
            *(verdict.metrics or ()),
            *(verdict.gate or ()),
            *verdict.tolerances,
            *verdict.bounds,
        )
        if name != "bits_per_byte"
    ]
    if others:
        raise ConfigError(
            f"the baseline ({folders[0]}) and the candidate ({folders[1]}) have different "
            f"tokenizers, so {', '.join(sorted(set(others)))} cannot be compared; only "
            "bits_per_byte is tokenizer-independent: drop the others or use one tokenizer"
        )
    sides: list[Records] = []
    sets: list[EvalSet] = []
    device, duration = "", 0.0
    for model, folder in zip(models, folders, strict=True):
        eval_set = load_eval_set(
            eval_cfg.dataset,
            task=task,
            name=eval_cfg.dataset_name,
            options=options.model_copy(update={"tokenizer": folder}),
        )
        if eval_set.columns is None or "doc" not in eval_set.columns:
            raise ConfigError(
                f"the baseline ({folders[0]}) and the candidate ({folders[1]}) have different "
                f"tokenizers, and {eval_set.name} holds token ids of one tokenizer; compare "
                "models that share a tokenizer, or use a text eval set (bits per byte)"
            )
        doc = np.asarray(eval_set.columns["doc"], dtype=np.int64)
        keep = doc.size  # windows are in document order: the first documents' are a prefix
        if eval_cfg.max_examples is not None:
            last = np.unique(doc)[: eval_cfg.max_examples][-1]
            keep = int(np.count_nonzero(doc <= last))
        dataset = eval_set.dataset
        if keep < doc.size and isinstance(dataset, TensorDataset):
            dataset = TensorDataset(*(tensor[:keep] for tensor in dataset.tensors))
        result = evaluate(
            model,
            dataset,
            adapter or adapter_for(task),
            pass_options(eval_cfg),
        )
        window_doc = doc[result.records.example_ids]
        ids, at = np.unique(window_doc, return_inverse=True)
        nll = np.bincount(at, weights=result.records.columns["nll_sum"].astype(np.float64))
        covered = np.bincount(at, weights=eval_set.columns["bytes"][result.records.example_ids])
        # Per-document loss in nats per byte (`tokens` := bytes), comparable across tokenizers.
        sides.append(Records(ids, {"nll_sum": nll, "bytes": covered, "tokens": covered}))
        sets.append(eval_set)
        device, duration = result.device, duration + result.duration_s
    common = np.intersect1d(sides[0].example_ids, sides[1].example_ids)
    sides = [
        Records(common, {k: v[np.isin(r.example_ids, common)] for k, v in r.columns.items()})
        for r in sides
    ]
    records = pair(sides[0], sides[1], task="lm")
    names = [sets[0].tokenizer.name, sets[1].tokenizer.name]
    info = dataset_info(sets[0])
    info.n = int(common.size)
    both = f"across tokenizers\n{sets[0].fingerprint}\n{sets[1].fingerprint}\n{common.size}"
    info.fingerprint = hashlib.sha256(both.encode()).hexdigest()
    info.tokenizer = f"baseline {names[0]}, candidate {names[1]}"
    info.note = (
        "The models have different tokenizers: each read the documents with its own, and only "
        "bits_per_byte (ΣNLL / (ln 2 · ΣUTF-8 bytes), per document) is compared and gated."
    )
    report = build_report(
        records,
        ReportContext(
            task=task,
            dataset=info,
            verdict=verdict.model_copy(
                update={"metrics": ("bits_per_byte",), "gate": verdict.gate and ("bits_per_byte",)}
            ),
            baseline=context.baseline,
            candidate=context.candidate,
            report_name=context.report_name,
            commit=context.commit,
            device=device,
            precision=eval_cfg.precision,
        ),
        duration,
    )
    document = getattr(sets[0].references, "document", None)
    if report.flips is not None and document is not None:
        for example in report.flips.loss_increases:  # ids are document indices
            ref = document(example.example_id)
            example.key, example.text = ref.key, ref.text
    key = None if document is None else (lambda i: document(i).key)
    return Compared(report, records, key)


def annotate_flips(report: Report, eval_set: EvalSet) -> None:
    """Name each flipped example as the user knows it (its source's key and text)."""
    if report.flips is None or eval_set.references is None:
        return
    for example in (
        *report.flips.newly_wrong,
        *report.flips.newly_right,
        *report.flips.loss_increases,
    ):
        ref = eval_set.describe(example.example_id)
        example.key, example.text = ref.key, ref.text


def _run_pass(
    models: tuple[torch.nn.Module, torch.nn.Module],
    eval_set: EvalSet,
    adapter: Adapter,
    options: PassOptions,
    task: TaskSpec,
) -> tuple[EngineResult, int]:
    """The paired pass over the eval set: in this process, or, under torchrun, over this
    rank's shard with every shard joined on rank 0 (the other ranks stop here: FollowerDone)."""
    from .distributed import current, evaluate_sharded, shard_of
    from .engine import EngineResult, evaluate_pair

    session = current()
    if session is None:
        result = evaluate_pair(
            *models, eval_set.dataset, adapter, options, num_classes=task.num_classes
        )
        return result, 1
    options = replace(options, device=session.device(options.device))

    def shard(start: int, stop: int) -> EngineResult:
        dataset = shard_of(eval_set.dataset, start, stop)
        return evaluate_pair(
            *models, dataset, adapter, options, num_classes=task.num_classes, first_id=start
        )

    records, local = evaluate_sharded(session, eval_set.n, shard, adapter.shared)
    return EngineResult(records, local.device, local.duration_s), session.world_size


def finish(compared: Compared, outputs: Outputs) -> CompareOutcome:
    """Record the comparison (one transaction), attach the trend, then write JSON + Markdown
    and the records file (`write_staged`: a path that cannot be written fails with nothing
    recorded)."""
    from .records_file import encode, paired_table

    report = compared.report

    def record() -> tuple[str, str]:
        _record(report, outputs.db, outputs.evaluations)
        return report.to_json(), render_markdown(report)

    records = None
    if outputs.records_path is not None:
        path = outputs.records_path
        records = (path, lambda: encode(paired_table(compared.records, compared.key), path))
    markdown = write_staged(outputs.json_path, outputs.markdown_path, record, records)
    return CompareOutcome(report=report, markdown=markdown)


def write_staged(
    json_path: Path | None,
    markdown_path: Path | None,
    record: Callable[[], tuple[str, str]],
    records: tuple[Path, Callable[[], bytes]] | None = None,
) -> str:
    """Stage the JSON and Markdown files and the records file (created beside their targets),
    encode the records, run `record` (the database transaction; it returns the JSON and the
    Markdown), then rename the files into place; returns the Markdown. A path that cannot be
    written, or records that cannot be encoded, fail before `record` runs, and after it only
    the rename of already-open files remains."""
    staged: dict[str, StagedFile] = {}
    try:
        if json_path is not None:
            staged["json"] = StagedFile(json_path, "JSON report")
        if markdown_path is not None:
            staged["markdown"] = StagedFile(markdown_path, "Markdown report")
        data = b""
        if records is not None:
            staged["records"] = StagedFile(records[0], "records file")
            data = records[1]()
        text, markdown = record()
        if "json" in staged:
            staged.pop("json").commit(text + "\n")
        if "markdown" in staged:
            staged.pop("markdown").commit(markdown)
        if "records" in staged:
            staged.pop("records").commit(data)
    finally:
        for leftover in staged.values():
            leftover.discard()
    return markdown


def _record(
    report: Report,
    db: ExperimentDB | None,
    evaluations: Sequence[tuple[EvaluationReport, bytes | None]] = (),
) -> None:
    if db is None:
        return
    report.comparison_id = db.create_comparison(report, evaluations)
    report.trend = db.trend(report.report_name, report.dataset.name, TREND_POINTS)


def run_compare(request: CompareRequest, db: ExperimentDB) -> CompareOutcome:
    """Compare two registered runs on a dataset, record the result and write the artifacts."""
    from .models import load_model

    check_records_path(request.records_path)
    check_outputs(
        {
            "--json-out": request.json_path,
            "--markdown-out": request.markdown_path,
            "--records-path": request.records_path,
        },
        db,
    )
    baseline_run = db.get_run(request.baseline_run_id)
    candidate_run = db.get_run(request.candidate_run_id)
    if baseline_run.task != candidate_run.task:
        raise ConfigError(
            f"run {baseline_run.id} is {_describe(baseline_run.task)} but run {candidate_run.id} "
            f"is {_describe(candidate_run.task)}; compare runs of the same task"
        )
    baseline, candidate = (
        load_model(
            run.source,
            allow_pickle=request.allow_pickle,
            trust_remote_code=request.trust_remote_code,
            task=run.task,
        )
        for run in (baseline_run, candidate_run)
    )
    eval_cfg = eval_config(request)
    context = ReportContext(
        task=baseline_run.task,
        dataset=DatasetInfo(name=request.dataset, fingerprint="", n=0),
        verdict=request.verdict,
        baseline=run_info(baseline_run, request.baseline_ref),
        candidate=run_info(candidate_run),
        report_name=request.report_name,
        commit=request.commit,
    )
    folders = (run_folder(baseline_run), run_folder(candidate_run))
    from .evaluation import RecordsCache

    cache = RecordsCache(db, (baseline_run, candidate_run), request.data, lookup=request.cache)
    compared = evaluate_models(
        baseline, candidate, eval_cfg, baseline_run.task, context, model_dirs=folders, cache=cache
    )
    compared.report.config = ConfigInfo(source=request.config_source, verdict=request.verdict)
    compared.report.baseline_source = cache.source
    outputs = Outputs(
        db=db if request.record else None,
        json_path=request.json_path,
        markdown_path=request.markdown_path,
        records_path=request.records_path,
        evaluations=cache.evaluations(compared.report) if request.record else (),
    )
    return finish(compared, outputs)


def eval_config(request: CompareRequest | EvaluateRequest) -> EvalConfig:
    """How a comparison's or an evaluation's pass reads and runs its eval set."""
    return EvalConfig(
        dataset=request.dataset or None,  # None: built by the dataset factory
        batch_size=request.batch_size,
        max_examples=request.max_examples,
        device=request.device,
        precision=request.precision,
        workers=request.workers,
        **request.data.model_dump(),
    )


def run_folder(run: RunRecord) -> Path | None:
    """The run's checkpoint when it is a folder (a Hugging Face model's: its tokenizer)."""
    path = Path(run.source.checkpoint)
    return path if path.is_dir() else None


@dataclass(frozen=True)
class CheckpointRequest:
    """A checkpoint to register as a run."""

    checkpoint: str
    task: TaskSpec
    name: str | None = None
    factory: str | None = None
    factory_kwargs: dict[str, Any] = field(default_factory=dict)
    format: CheckpointFormat | None = None
    git_sha: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False  # run code shipped in a Hugging Face folder (auto_map)


def register_checkpoint(db: ExperimentDB, request: CheckpointRequest) -> RunRecord:
    """Hash the checkpoint, check that it loads safely and that its output fits the task
    (`models.check_fits_task`), and register it as a run.

    Loads the model once (and runs an lm once on a tiny dummy batch); a mismatch fails here, at
    `runs add`, not in the middle of a comparison.
    """
    from .models import check_fits_task, load_model, make_source

    source = make_source(
        request.checkpoint,
        factory=request.factory,
        factory_kwargs=request.factory_kwargs,
        format=request.format,
    )
    module = load_model(  # refuse unloadable / unsafe checkpoints now
        source,
        allow_pickle=request.allow_pickle,
        trust_remote_code=request.trust_remote_code,
        task=request.task,
    )
    check_fits_task(module, request.task, source)
    run = RunCreate(
        name=request.name or Path(request.checkpoint).stem,
        task=request.task,
        source=source,
        git_sha=request.git_sha,
    )
    # Registering the same file (same bytes, loader and task) again returns the existing run:
    # a CI job registering its checkpoints on every push must not grow the database.
    # `add_run` is insert-or-get on the run's identity (concurrent adds give one run); the
    # scan before it finds runs registered before that identity existed (schema version 5).
    for existing in db.list_runs():
        if _same_run(existing, run):
            claimed = db.claim_run(existing.id)  # not removed by a step that failed since
            if claimed is not None:
                return claimed
    return db.add_run(run)


def _same_run(existing: RunCreate, new: RunCreate) -> bool:
    """Same name, task, loader and bytes, at the same file however its path is spelled.

    The factory counts only for a format that loads through one: a self-contained checkpoint
    recorded with a needless factory (before `make_source` dropped it) is still the same run.
    """
    from .formats import REGISTRY

    if (existing.name, existing.task) != (new.name, new.task):
        return False
    old, fresh = existing.source, new.source
    if (old.format, old.sha256) != (fresh.format, fresh.sha256):
        return False
    needs_factory = REGISTRY.get(old.format).needs_factory
    if needs_factory and (old.factory, old.factory_kwargs) != (fresh.factory, fresh.factory_kwargs):
        return False
    return os.path.realpath(old.checkpoint) == os.path.realpath(fresh.checkpoint)
