"""Text classification eval sets (`textcls`) and the classification task on text: JSONL lines
with labels, a tokenizer trained here, and a tiny BERT saved and reloaded with transformers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from regress_action import compare_models
from regress_action.errors import DataError
from regress_action.sources import TEXT_SHOWN
from regress_action.spec import DataOptions, EvalConfig, TaskSpec, VerdictConfig
from regress_action.tasks import adapter_for
from regress_action.textcls import class_ids, load_jsonl

TEXTS = [
    "the film was wonderful and warm",
    "a dull and boring plot",
    "great acting, great music",
    "terrible pacing and a weak ending",
    "i loved every minute",
    "not worth the ticket",
]
LABELS = ["pos", "neg", "pos", "neg", "pos", "neg"]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _tokenizer_json(tmp_path: Path) -> Path:
    """A WordPiece tokenizer trained on the texts, with BERT's [CLS] … [SEP] post-processor."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(TEXTS, trainers.WordPieceTrainer(special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", 3)],
    )
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def test_names_become_sorted_ids_and_bytes_pad_to_the_longest(tmp_path: Path) -> None:
    rows = [{"text": t, "label": y} for t, y in zip(TEXTS, LABELS, strict=True)]
    loaded = load_jsonl(_jsonl(tmp_path / "a.jsonl", rows), None, DataOptions())
    inputs, labels = loaded.dataset.tensors  # type: ignore[attr-defined]
    assert loaded.class_names == ["neg", "pos"]
    assert labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert loaded.task == TaskSpec(modality="text", task="classification", num_classes=2)
    longest = max(len(t.encode()) for t in TEXTS)
    assert inputs.shape == (6, 2, longest) and inputs.dtype == torch.int64
    first = TEXTS[0].encode()
    assert bytes(inputs[0, 0, : len(first)].tolist()) == first
    assert inputs[0, 1].sum() == len(first) and inputs[0, 0, len(first) :].eq(0).all()
    assert loaded.describe is not None
    assert loaded.describe(1).key == "line 2" and loaded.describe(1).text == TEXTS[1]


def test_context_length_truncates_and_long_texts_are_shortened_for_the_report(
    tmp_path: Path,
) -> None:
    rows = [{"text": "x" * 500, "label": 0}, {"text": "ab", "label": 1}, {}]
    rows.pop()
    path = _jsonl(tmp_path / "a.jsonl", rows)
    path.write_text("\n" + path.read_text(), encoding="utf-8")  # a blank first line: skipped
    loaded = load_jsonl(path, None, DataOptions(context_length=16))
    inputs = loaded.dataset.tensors[0]  # type: ignore[attr-defined]
    assert inputs.shape == (2, 2, 16) and loaded.class_names is None
    assert loaded.task is not None and loaded.task.num_classes == 2
    assert loaded.describe is not None
    ref = loaded.describe(0)
    assert ref.key == "line 2" and ref.text is not None
    assert len(ref.text) == TEXT_SHOWN and ref.text.endswith("…")
    assert len(load_jsonl(path, 1, DataOptions()).dataset) == 1  # type: ignore[arg-type]


def test_tokenizer_json_adds_its_special_tokens_and_keeps_them_when_truncating(
    tmp_path: Path,
) -> None:
    tokenizer = _tokenizer_json(tmp_path)
    rows = [{"text": t, "label": y} for t, y in zip(TEXTS, LABELS, strict=True)]
    path = _jsonl(tmp_path / "a.jsonl", rows)
    inputs, _ = load_jsonl(path, None, DataOptions(tokenizer=str(tokenizer))).dataset.tensors  # type: ignore[attr-defined]
    assert inputs[0, 0, 0] == 2  # [CLS]
    assert inputs[1, 0, int(inputs[1, 1].sum()) - 1] == 3  # [SEP] ends each text
    short = load_jsonl(path, None, DataOptions(tokenizer=str(tokenizer), context_length=4))
    ids = short.dataset.tensors[0][:, 0]  # type: ignore[attr-defined]
    assert ids.shape == (6, 4) and ids[:, 0].eq(2).all() and ids[:, 3].eq(3).all()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"text": "a b", "label": 1}, {"text": "c d", "label": "x"}], "all integers or all"),
        ([{"text": "a b", "label": True}, {"text": "c", "label": 0}], "found boolean, int"),
        ([{"text": "a b", "label": -1}, {"text": "c d", "label": 1}], "negative"),
        ([{"text": "a b"}], 'a.jsonl:1: no "label"'),
        ([{"text": "a b", "label": 0}, {"text": "c d", "label": 0}], "only one class"),
        ([{"text": "", "label": 0}, {"text": "cd", "label": 1}], "line 1 has no tokens"),
        ([{"label": 0}], 'a string "text" field'),
        ([{"text": "a", "label": 0, "group": 1.5}, {"text": "b", "label": 1}], '"group" is 1.5'),
        ([{"text": "a", "label": 0, "group": "u1"}, {"text": "b", "label": 1}], ':2: no "group"'),
    ],
)
def test_bad_lines_are_one_line_data_errors(
    tmp_path: Path, rows: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(DataError, match=message) as caught:
        load_jsonl(_jsonl(tmp_path / "a.jsonl", rows), None, DataOptions())
    assert "\n" not in str(caught.value)


def test_class_names_give_the_order_of_string_labels() -> None:
    ids, names = class_ids(["b", "a", "c"], "x", ["c", "b", "a"])
    assert ids.tolist() == [1, 2, 0] and names == ["c", "b", "a"]
    with pytest.raises(DataError, match="'d' is not one of the class names"):
        class_ids(["d"], "x", ["c", "b", "a"])


class BagOfBytes(nn.Module):
    """A plain module called positionally: model(input_ids, attention_mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, ...]] = []

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(mask.shape))
        count = mask.sum(dim=1).float()
        return torch.stack([count, 30.0 - count], dim=1)


def test_a_plain_module_gets_ids_and_mask_positionally(tmp_path: Path) -> None:
    rows = [{"text": t, "label": y} for t, y in zip(TEXTS, LABELS, strict=True)]
    loaded = load_jsonl(_jsonl(tmp_path / "a.jsonl", rows), None, DataOptions())
    assert loaded.task is not None
    adapter = adapter_for(loaded.task)
    model = BagOfBytes()
    inputs, labels = loaded.dataset.tensors  # type: ignore[attr-defined]
    columns = adapter.records(adapter.forward(model, (inputs, labels)), (inputs, labels), "b")
    assert model.seen == [tuple(inputs[:, 1].shape)]
    assert columns["correct"].shape == (6,)


def _tiny_bert(folder: Path, vocab_size: int, seed: int) -> nn.Module:
    from transformers import AutoModelForSequenceClassification, BertConfig, BertModel

    del BertModel
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    return AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)  # type: ignore[no-any-return]


def test_a_tiny_bert_runs_through_compare_models_end_to_end(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = _tokenizer_json(tmp_path)
    vocab = Tokenizer.from_file(str(tokenizer)).get_vocab_size()
    rows = [{"text": t, "label": y} for t, y in zip(TEXTS * 4, LABELS * 4, strict=True)]
    path = _jsonl(tmp_path / "reviews.jsonl", rows)
    loaded = load_jsonl(path, None, DataOptions(tokenizer=str(tokenizer)))
    assert loaded.task is not None
    baseline = _tiny_bert(tmp_path / "base", vocab, 0)
    candidate = _tiny_bert(tmp_path / "cand", vocab, 1)
    eval_cfg = EvalConfig(dataset=loaded.dataset, dataset_name="reviews", device="cpu")
    eval_cfg = eval_cfg.model_copy(update={"batch_size": 5})
    result = compare_models(baseline, candidate, None, loaded.task, eval_cfg)
    assert result["dataset"]["n"] == 24
    assert set(result["metrics"]) >= {"accuracy", "loss", "macro_f1", "ece"}
    assert 0.0 <= result["metrics"]["accuracy"]["baseline"] <= 1.0


def test_classifiers_whose_folders_hold_different_tokenizers_are_refused(tmp_path: Path) -> None:
    import shutil

    from tokenizers import Tokenizer

    from regress_action.errors import ConfigError

    tokenizer = _tokenizer_json(tmp_path)
    vocab = Tokenizer.from_file(str(tokenizer)).get_vocab_size()
    rows = [{"text": t, "label": y} for t, y in zip(TEXTS, LABELS, strict=True)]
    path = _jsonl(tmp_path / "reviews.jsonl", rows)
    baseline = _tiny_bert(tmp_path / "base", vocab, 0)
    candidate = _tiny_bert(tmp_path / "cand", vocab, 1)
    shutil.copy(tokenizer, tmp_path / "base" / "tokenizer.json")
    other = Tokenizer.from_file(str(tokenizer))
    other.add_tokens(["brandnewword"])
    other.save(str(tmp_path / "cand" / "tokenizer.json"))
    task = TaskSpec(modality="text", task="classification", num_classes=2)
    eval_cfg = EvalConfig(dataset=str(path), tokenizer="model", device="cpu")
    with pytest.raises(ConfigError, match="have different tokenizers"):
        compare_models(baseline, candidate, None, task, eval_cfg)
    # The same tokenizer in both folders: `model` reads it, and the context is the models'
    # maximum positions.
    shutil.copy(tokenizer, tmp_path / "cand" / "tokenizer.json")
    result = compare_models(baseline, candidate, None, task, eval_cfg)
    assert result["dataset"]["n"] == len(rows)
    assert result["dataset"]["tokenizer"] == str(tmp_path / "base")


def test_a_group_field_makes_clusters_the_statistics_resample(tmp_path: Path) -> None:
    texts = [f"{word} {i % 7}" for i, word in enumerate(["good", "bad", "fine", "poor"] * 10)]
    rows = [{"text": t, "label": i % 2, "group": f"user{i // 5}"} for i, t in enumerate(texts)]
    data = _jsonl(tmp_path / "a.jsonl", rows)
    loaded = load_jsonl(data, None, DataOptions())
    assert loaded.columns is not None and loaded.columns["group"].tolist()[:6] == [0] * 5 + [1]
    spec = TaskSpec(modality="text", task="classification", num_classes=2)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(Bag())
    report = compare_models(
        models[0], models[1], None, spec, EvalConfig(dataset=str(data), device="cpu"),
        verdict=VerdictConfig(significance="report", resamples=200),
    )  # fmt: skip
    for name in ("accuracy", "loss"):
        assert report["metrics"][name]["clusters"] == 8, name
        assert report["metrics"][name]["n"] == 40


class Bag(nn.Module):
    """A bag of byte embeddings, called as model(input_ids, attention_mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(256, 2)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.bag(ids)
