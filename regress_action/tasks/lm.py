"""The causal language-model task (`lm`): logits (B, T, V), next-token targets (B, T) padded with
the ignore index.

Owns its metrics (loss, perplexity = exp(ΣNLL / Σtokens) over the whole set, token accuracy,
bits per byte), its adapter, its analysis (the largest per-example loss increases) and the
built-in `lm_tiny`. Torch only inside the adapter.

Record columns per example: `nll_sum` (summed token NLL, nats), `tokens`, `correct_tokens`, and
`bytes`, the UTF-8 bytes of text the example's predicted tokens cover. Bytes are the data's,
not the model's: a text eval set gives them as a data column (`sources.Loaded.columns`, any
tokenizer), which `app` joins to both sides' records; the adapter only assumes one byte per
token for a byte-level vocabulary (256) from a source without data columns (`lm_tiny`, a
Dataset). Bits per byte is offered for every vocabulary; `app` leaves it out when the eval set
has no bytes (token arrays).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis import largest_increases
from ..metrics import Metric, f64
from ..records import PairedRecords
from ..report import TOP_EXAMPLES, Flips
from ..spec import IGNORE_INDEX
from ..vocab import BYTE_VOCAB
from .base import Analysis, BuiltinDataset, SizeField, Task, forward_inputs, logits_of

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from ..spec import TaskSpec


METRICS: dict[str, Metric] = {
    "loss": Metric(
        "loss", False, "ratio", "mean token NLL (nats)", ("nll_sum", "tokens"), hypothesis="nll"
    ),
    "perplexity": Metric(
        "perplexity",
        False,
        "ratio",
        "exp(ΣNLL / Σtokens)",
        ("nll_sum", "tokens"),
        transform="exp",
        hypothesis="nll",
    ),
    "token_accuracy": Metric(
        "token_accuracy",
        True,
        "ratio",
        "next-token accuracy",
        ("correct_tokens", "tokens"),
        unit_interval=True,
    ),
    # ΣNLL over the bytes the tokens cover: tokenizer-independent. The same hypothesis as the
    # loss (a fixed eval set's bytes do not depend on the model).
    "bits_per_byte": Metric(
        "bits_per_byte",
        False,
        "ratio",
        "ΣNLL / (ln 2 · Σbytes)",
        ("nll_sum", "bytes"),
        transform="bits",
        hypothesis="nll",
    ),
}


class LMAdapter:
    """Summed NLL, token count, correct tokens per example (and bytes = tokens for a
    byte-level vocabulary; a text eval set's own `bytes` column replaces them)."""

    task: str = "lm"
    shared: tuple[str, ...] = ()

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    forward = staticmethod(forward_inputs)

    def records(self, output: Any, batch: Any, side: str) -> dict[str, torch.Tensor]:
        import torch
        import torch.nn.functional as F

        from ..errors import ModelOutputError

        target = batch[1].long()
        logits = logits_of(output, side)
        if (
            logits.ndim != 3
            or logits.shape[2] != self.vocab_size
            or logits.shape[:2] != target.shape
        ):
            raise ModelOutputError(
                f"the {side} model returned logits of shape {tuple(logits.shape)} for targets of "
                f"shape {tuple(target.shape)}; expected (batch, seq, {self.vocab_size}) for "
                f"vocab_size={self.vocab_size}. Check the model or the task's vocab_size"
            )
        mask = target != IGNORE_INDEX
        nll = F.cross_entropy(
            logits.float().flatten(0, 1),
            target.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="none",
        ).view(target.shape)
        tokens = mask.sum(dim=1).to(torch.float64)
        # max(dim).indices: the first maximal index, as argmax, in about 60 % of its CPU time.
        predicted = logits.max(dim=2).indices
        correct = ((predicted == target) & mask).sum(dim=1).to(torch.float64)
        columns = {
            "nll_sum": nll.to(torch.float64).sum(dim=1),
            "tokens": tokens,
            "correct_tokens": correct,
        }
        if self.vocab_size == BYTE_VOCAB:
            columns["bytes"] = tokens  # one token is one byte of text
        return columns


def loss_increases(records: PairedRecords, *, top: int | None = TOP_EXAMPLES) -> Flips:
    """Per-example mean token loss (nll_sum / tokens), so long and short examples compare;
    examples without tokens have no loss and are skipped."""
    base, cand = records.baseline, records.candidate
    base_tokens, cand_tokens = f64(base["tokens"]), f64(cand["tokens"])
    valid = (base_tokens > 0) & (cand_tokens > 0)
    base_loss, cand_loss = np.zeros(records.n), np.zeros(records.n)
    np.divide(base["nll_sum"], base_tokens, out=base_loss, where=valid)
    np.divide(cand["nll_sum"], cand_tokens, out=cand_loss, where=valid)
    listed, count = largest_increases(records, base_loss, cand_loss, valid, top)
    return Flips(loss_increases=listed, loss_increases_count=count)


def _lm_tiny(split: str, n: int | None) -> Dataset[Any]:
    from ..builtin_data import builtin_split

    return builtin_split("lm_tiny", split, n)


class LMTask(Task):
    name = "lm"
    primary = ("loss",)
    description = "causal language model: logits (batch, seq, vocab_size), next-token targets"
    modalities = ("text",)
    sizes = (SizeField("vocab_size", "vocab-size", default=BYTE_VOCAB),)
    report_fragments = ("flips.md.j2",)
    columns = ("nll_sum", "tokens", "correct_tokens", "bytes")
    builtin = (
        BuiltinDataset(
            "lm_tiny", {"modality": "text", "task": "lm", "vocab_size": BYTE_VOCAB}, _lm_tiny
        ),
    )

    def all_metrics(self) -> dict[str, Metric]:
        return dict(METRICS)

    def metrics(self, spec: TaskSpec) -> dict[str, Metric]:
        """Every metric, bits per byte included for any vocabulary: whether the eval set has
        bytes is the data's to say (`app` drops it for token arrays)."""
        return self.all_metrics()

    def adapter(self, spec: TaskSpec) -> LMAdapter:
        assert spec.vocab_size is not None
        return LMAdapter(spec.vocab_size)

    def analyse(self, records: PairedRecords, class_names: list[str] | None) -> Analysis:
        return Analysis(flips=loss_increases(records))


TASK = LMTask()
