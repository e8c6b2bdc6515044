"""Engine + adapters + metric maths, checked against independent pure-Python references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from regress_action.engine import PassOptions, evaluate, evaluate_pair
from regress_action.errors import ConfigError, DataError, ModelOutputError
from regress_action.spec import IGNORE_INDEX, TaskSpec
from regress_action.tasks import adapter_for, select_metrics

CLS = TaskSpec(modality="vision", task="classification", num_classes=7)
LM = TaskSpec(modality="text", task="lm", vocab_size=256)


class Table(nn.Module):
    """Returns stored logits for the example index carried in the input's first column."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        table: torch.Tensor = self.logits
        return table[x[:, 0].long()]


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def _reference_classification(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    n, classes = logits.shape
    rows, ys = logits.tolist(), labels.tolist()
    correct = losses = top5 = 0.0
    preds, confs, hits = [], [], []
    for row, y in zip(rows, ys, strict=True):
        probs = _softmax(row)
        pred = max(range(classes), key=lambda k: probs[k])
        preds.append(pred)
        confs.append(probs[pred])
        hits.append(pred == y)
        correct += pred == y
        losses += -math.log(probs[y])
        top5 += y in sorted(range(classes), key=lambda k: -probs[k])[:5]
    f1s = []
    for k in range(classes):
        tp = sum(1 for p, y in zip(preds, ys, strict=True) if p == k and y == k)
        fp = sum(1 for p, y in zip(preds, ys, strict=True) if p == k and y != k)
        fn = sum(1 for p, y in zip(preds, ys, strict=True) if p != k and y == k)
        f1s.append(0.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    ece = ce_sq = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        members = [i for i, c in enumerate(confs) if lo < c <= hi]
        if members:
            acc = sum(hits[i] for i in members) / len(members)
            conf = sum(confs[i] for i in members) / len(members)
            ece += len(members) / n * abs(acc - conf)
        if len(members) >= 2:  # debiased: squared mean gap minus its variance estimate
            gaps = [confs[i] - hits[i] for i in members]
            mean = sum(gaps) / len(gaps)
            var = sum((g - mean) ** 2 for g in gaps) / (len(gaps) - 1)
            ce_sq += len(members) / n * (mean * mean - var / len(gaps))
    return {
        "accuracy": correct / n,
        "loss": losses / n,
        "top5_accuracy": top5 / n,
        "macro_f1": sum(f1s) / classes,
        "ece": ece,
        "calibration_error_sq": ce_sq,
    }


def _index_dataset(labels: torch.Tensor) -> TensorDataset:
    index = torch.arange(labels.shape[0], dtype=torch.float32).view(-1, 1)
    return TensorDataset(index, labels)


def test_classification_metrics_match_a_reference() -> None:
    gen = torch.Generator().manual_seed(1)
    n = 203  # not a multiple of the batch size
    labels = torch.randint(0, 7, (n,), generator=gen)
    base_logits = torch.randn(n, 7, generator=gen) * 2
    cand_logits = base_logits + torch.randn(n, 7, generator=gen)
    result = evaluate_pair(
        Table(base_logits),
        Table(cand_logits),
        _index_dataset(labels),
        adapter_for(CLS),
        PassOptions(batch_size=32, device="cpu"),
    )
    specs = select_metrics(CLS, None)
    assert list(specs) == [
        "accuracy", "loss", "top5_accuracy", "macro_f1", "ece", "calibration_error_sq",
    ]  # fmt: skip
    for side, logits in (("baseline", base_logits), ("candidate", cand_logits)):
        expected = _reference_classification(logits, labels)
        cols = result.records.side(side)
        for name, spec in specs.items():
            assert spec.value(cols, 7) == pytest.approx(expected[name], abs=1e-6), name
    assert result.records.n == n
    assert np.array_equal(result.records.example_ids, np.arange(n))


def test_both_models_run_once_per_batch() -> None:
    labels = torch.zeros(100, dtype=torch.long)
    base, cand = Table(torch.randn(100, 7)), Table(torch.randn(100, 7))
    evaluate_pair(base, cand, _index_dataset(labels), adapter_for(CLS), PassOptions(batch_size=25))
    assert base.calls == cand.calls == 4


def test_lm_metrics_match_a_reference_with_padding() -> None:
    gen = torch.Generator().manual_seed(2)
    n, t, v = 9, 12, 256
    inputs = torch.randint(0, v, (n, t), generator=gen)
    targets = torch.randint(0, v, (n, t), generator=gen)
    targets[0, 5:] = IGNORE_INDEX  # a short example
    logits = torch.randn(n, t, v, generator=gen)

    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Recover the example from its input row (rows are distinct).
            idx = [int((inputs == row).all(dim=1).nonzero()[0]) for row in x]
            return logits[idx]

    result = evaluate_pair(
        Fixed(), Fixed(), TensorDataset(inputs, targets), adapter_for(LM), PassOptions(batch_size=4)
    )
    nll = tokens = correct = 0.0
    for i in range(n):
        for j in range(t):
            y = int(targets[i, j])
            if y == IGNORE_INDEX:
                continue
            probs = _softmax(logits[i, j].tolist())
            nll -= math.log(probs[y])
            tokens += 1
            correct += max(range(v), key=lambda k: probs[k]) == y
    specs = select_metrics(LM, None)
    cols = result.records.baseline
    assert specs["loss"].value(cols) == pytest.approx(nll / tokens, rel=1e-6)
    assert specs["perplexity"].value(cols) == pytest.approx(math.exp(nll / tokens), rel=1e-6)
    assert specs["token_accuracy"].value(cols) == pytest.approx(correct / tokens)
    assert specs["bits_per_byte"].value(cols) == pytest.approx(nll / tokens / math.log(2), rel=1e-6)
    assert cols["tokens"][0] == 5


def test_perplexity_is_not_an_average_of_batch_perplexities() -> None:
    cols = {"nll_sum": np.array([1.0, 30.0]), "tokens": np.array([1.0, 10.0])}
    spec = select_metrics(LM, ["perplexity"])["perplexity"]
    assert spec.value(cols) == pytest.approx(math.exp(31 / 11))


def test_wrong_number_of_classes_is_a_model_output_error() -> None:
    labels = torch.zeros(10, dtype=torch.long)
    with pytest.raises(
        ModelOutputError, match=r"num_classes=7.*\(10, 5\)|\(10, 5\).*num_classes=7"
    ):
        evaluate_pair(
            Table(torch.randn(10, 5)),
            Table(torch.randn(10, 7)),
            _index_dataset(labels),
            adapter_for(CLS),
        )


def test_wrong_vocab_is_a_model_output_error() -> None:
    x = torch.zeros(4, 8, dtype=torch.long)

    class Small(nn.Module):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return torch.zeros(inputs.shape[0], inputs.shape[1], 100)

    with pytest.raises(ModelOutputError, match="vocab_size=256"):
        evaluate_pair(Small(), Small(), TensorDataset(x, x), adapter_for(LM))


def test_a_model_that_crashes_on_the_input_is_a_model_output_error() -> None:
    labels = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ModelOutputError, match="baseline model failed"):
        evaluate_pair(nn.Linear(3, 7), nn.Linear(1, 7), _index_dataset(labels), adapter_for(CLS))


def test_empty_dataset_is_a_data_error() -> None:
    empty = TensorDataset(torch.zeros(0, 1), torch.zeros(0, dtype=torch.long))
    with pytest.raises(DataError, match="no examples"):
        evaluate_pair(Table(torch.zeros(1, 7)), Table(torch.zeros(1, 7)), empty, adapter_for(CLS))


def test_unknown_metric_fails_with_a_hint() -> None:
    with pytest.raises(ConfigError, match="did you mean 'perplexity'"):
        select_metrics(LM, ["perplexty"])


def test_unavailable_cuda_is_a_config_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    labels = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        evaluate_pair(
            Table(torch.zeros(2, 7)),
            Table(torch.zeros(2, 7)),
            _index_dataset(labels),
            adapter_for(CLS),
            PassOptions(device="cuda"),
        )


def test_model_outputs_in_tuples_mappings_and_objects_are_accepted() -> None:
    labels = torch.randint(0, 7, (6,))
    logits = torch.randn(6, 7)

    class Wrapped(nn.Module):
        def __init__(self, kind: str) -> None:
            super().__init__()
            self.kind = kind

        def forward(self, x: torch.Tensor) -> object:
            out = logits[x[:, 0].long()]
            return {"logits": out} if self.kind == "dict" else (out, None)

    result = evaluate_pair(
        Wrapped("dict"), Wrapped("tuple"), _index_dataset(labels), adapter_for(CLS)
    )
    assert np.array_equal(
        result.records.baseline["prediction"], result.records.candidate["prediction"]
    )


def test_the_callers_training_mode_is_restored() -> None:
    labels = torch.zeros(4, dtype=torch.long)
    base, cand = Table(torch.randn(4, 7)), Table(torch.randn(4, 7))
    base.train()
    cand.eval()
    evaluate_pair(base, cand, _index_dataset(labels), adapter_for(CLS))
    assert base.training and not cand.training


def test_a_label_outside_the_classes_is_a_data_error() -> None:
    labels = torch.tensor([0, 1, 7])
    with pytest.raises(DataError, match=r"label 7, outside 0\.\.6"):
        evaluate_pair(
            Table(torch.randn(3, 7)),
            Table(torch.randn(3, 7)),
            _index_dataset(labels),
            adapter_for(CLS),
        )


def test_the_one_model_pass_gives_the_records_of_the_paired_pass() -> None:
    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 7, (50,), generator=gen)
    base, cand = Table(torch.randn(50, 7, generator=gen)), Table(torch.randn(50, 7, generator=gen))
    dataset, adapter = _index_dataset(labels), adapter_for(CLS)
    paired = evaluate_pair(base, cand, dataset, adapter, PassOptions(batch_size=16)).records
    alone = evaluate(cand, dataset, adapter, PassOptions(batch_size=7)).records
    assert np.array_equal(alone.example_ids, paired.example_ids)
    assert set(alone.columns) == set(paired.candidate)
    for name, values in alone.columns.items():
        assert np.array_equal(values, paired.candidate[name]), name


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 7))


def test_bf16_on_cpu_reaches_the_forward_pass() -> None:
    gen = torch.Generator().manual_seed(4)
    dataset = TensorDataset(torch.randn(64, 16, generator=gen), torch.randint(0, 7, (64,)))
    base, cand = _mlp(0), _mlp(1)
    records = {
        precision: evaluate_pair(
            base,
            cand,
            dataset,
            adapter_for(CLS),
            PassOptions(batch_size=16, device="cpu", precision=precision),
        ).records
        for precision in ("fp32", "bf16")
    }
    for side in ("baseline", "candidate"):
        fp32, bf16 = records["fp32"].side(side)["loss"], records["bf16"].side(side)["loss"]
        # The adapter casts logits to float32 whatever the forward's dtype: float32 columns.
        assert bf16.dtype == fp32.dtype == np.float32
        assert not np.array_equal(fp32, bf16), "bf16 must change the forward pass"
        np.testing.assert_allclose(bf16, fp32, rtol=0.05, atol=0.02)
    assert next(base.parameters()).dtype == torch.float32  # autocast leaves the weights alone
    alone = evaluate(cand, dataset, adapter_for(CLS), PassOptions(device="cpu", precision="bf16"))
    assert np.array_equal(alone.records.columns["loss"], records["bf16"].candidate["loss"])


def test_fp16_on_cpu_is_a_config_error() -> None:
    labels = torch.zeros(4, dtype=torch.long)
    with pytest.raises(
        ConfigError, match=r"precision fp16 needs a CUDA device.*use precision bf16"
    ):
        evaluate_pair(
            Table(torch.randn(4, 7)),
            Table(torch.randn(4, 7)),
            _index_dataset(labels),
            adapter_for(CLS),
            PassOptions(device="cpu", precision="fp16"),
        )
