"""LM text eval sets: tokenizers, sliding windows, bits per byte, token arrays, example keys and
models with different tokenizers, on real tiny GPT-2 models and real files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tokenizers
import torch
import transformers

from regress_action import compare_models
from regress_action.data import load_eval_set
from regress_action.errors import ConfigError, DataError
from regress_action.spec import IGNORE_INDEX, DataOptions, EvalConfig, TaskSpec, VerdictConfig
from regress_action.textlm import plan_windows, window_tensors

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine, and a penny saved is a penny earned",
    "über café naïve — unicode text costs more bytes than characters",
    "to be or not to be, that is the question",
] * 3


def _windows(n: int, context: int, stride: int) -> tuple[list[list[int]], list[list[int]]]:
    plan = plan_windows(np.array([0]), np.array([n]), context, stride)
    inputs, targets = window_tensors(np.arange(n), plan, context, -1)
    return inputs.tolist(), targets.tolist()


# ---------------------------------------------------------------- windows


def test_a_short_text_is_one_full_context_window() -> None:
    inputs, targets = _windows(5, 8, 4)
    assert inputs == [[0, 1, 2, 3, -1, -1, -1, -1]]
    assert targets == [[1, 2, 3, 4] + [IGNORE_INDEX] * 4]


def test_stride_equal_to_context_gives_disjoint_chunks() -> None:
    inputs, targets = _windows(13, 4, 4)
    assert inputs == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert targets == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]


def test_overlapping_windows_by_hand() -> None:
    # 10 tokens, context 4, stride 2: windows start at 0, 2, 4, 6; targets 1-4, then 5-6,
    # 7-8, 9, each once, with at least context - stride = 2 tokens of left context.
    inputs, targets = _windows(10, 4, 2)
    x = IGNORE_INDEX
    assert inputs == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, -1]]
    assert targets == [[1, 2, 3, 4], [x, x, 5, 6], [x, x, 7, 8], [x, x, 9, x]]


@pytest.mark.parametrize(("n", "context", "stride"), [(2, 4, 2), (50, 8, 3), (97, 16, 16)])
def test_every_token_after_the_first_is_predicted_once(n: int, context: int, stride: int) -> None:
    inputs, targets = _windows(n, context, stride)
    predicted = sorted(t for row in targets for t in row if t != IGNORE_INDEX)
    assert predicted == list(range(1, n))
    for row_in, row_t in zip(inputs, targets, strict=True):
        for position, target in enumerate(row_t):
            if target != IGNORE_INDEX:
                assert row_in[position] == target - 1  # the token right before it
                assert position >= min(target - 1, context - stride)  # left context


# ---------------------------------------------------------------- tiny models and files


def _tokenizer_json(path: Path, vocab: int = 120, extra: str = "") -> Path:
    model = tokenizers.models.BPE(unk_token="[UNK]")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["[UNK]", "<pad>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*CORPUS, extra], trainer)
    tok.save(str(path))
    return path


def _gpt2(vocab: int, seed: int, positions: int = 64) -> Any:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=positions,
        vocab_size=vocab,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config).eval()


def _folder(tmp_path: Path, name: str, tokenizer: Path, seed: int) -> Path:
    """A Hugging Face folder: a tiny GPT-2 and its tokenizer, loaded back as a user would."""
    folder = tmp_path / name
    backend = tokenizers.Tokenizer.from_file(str(tokenizer))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>")
    _gpt2(backend.get_vocab_size(), seed).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def _lm(vocab: int) -> TaskSpec:
    return TaskSpec(modality="text", task="lm", vocab_size=vocab)


def _reference_nll(model: Any, ids: list[int], context: int, stride: int) -> tuple[float, int]:
    """The Hugging Face perplexity guide's loop, one document, written out per window: windows
    start every `stride` tokens and read up to context + 1 tokens; the tokens after the
    previous window's end are scored from everything before them in the window."""
    total, count, previous_end = 0.0, 0, 1
    for begin in range(0, len(ids), stride):
        end = min(begin + context + 1, len(ids))
        with torch.no_grad():
            logits = model(torch.tensor([ids[begin : end - 1]])).logits[0]
        log_probs = torch.log_softmax(logits.double(), dim=-1)
        for target in range(previous_end, end):
            total -= float(log_probs[target - 1 - begin, ids[target]])
            count += 1
        previous_end = end
        if end == len(ids):
            break
    return total, count


def _compare(
    baseline: Any, candidate: Any, vocab: int, dataset: Path, **options: Any
) -> dict[str, Any]:
    verdict = options.pop("verdict", None) or VerdictConfig(significance="off")
    markdown = options.pop("markdown_path", None)
    cfg = EvalConfig(dataset=str(dataset), device="cpu", **options)
    return compare_models(
        baseline, candidate, None, _lm(vocab), cfg, verdict=verdict, markdown_path=markdown
    )


def test_tiny_gpt2_matches_the_reference_loop_at_any_batch_size(tmp_path: Path) -> None:
    tok_path = _tokenizer_json(tmp_path / "tokenizer.json")
    backend = tokenizers.Tokenizer.from_file(str(tok_path))
    vocab = backend.get_vocab_size()
    long_text = " ".join(CORPUS)  # several windows at context 64
    texts = [long_text, CORPUS[0], CORPUS[2]]
    data = _jsonl(tmp_path / "eval.jsonl", texts)
    base, cand = _gpt2(vocab, 0), _gpt2(vocab, 1)
    results = [
        _compare(
            base,
            cand,
            vocab,
            data,
            tokenizer=str(tok_path),
            context_length=64,
            stride=32,
            batch_size=batch,
        )
        for batch in (1, 7)
    ]
    assert results[0]["metrics"] == results[1]["metrics"]
    for side, model in (("baseline", base), ("candidate", cand)):
        total, count = 0.0, 0
        for text in texts:
            nll, n = _reference_nll(model, backend.encode(text).ids, 64, 32)
            total, count = total + nll, count + n
        assert results[0]["metrics"]["loss"][side] == pytest.approx(total / count, rel=1e-5)
        # Bits per byte over the bytes after each document's first token (whose share of the
        # text runs to the second token's start; offsets count characters).
        covered = sum(
            len(t.encode()) - len(t[: backend.encode(t).offsets[1][0]].encode()) for t in texts
        )
        bpb = results[0]["metrics"]["bits_per_byte"][side]
        assert bpb == pytest.approx(total / (covered * math.log(2)), rel=1e-5)
    assert results[0]["dataset"]["tokenizer"] == str(tok_path)


def test_the_statistics_resample_documents_not_windows(tmp_path: Path) -> None:
    tok_path = _tokenizer_json(tmp_path / "tokenizer.json")
    vocab = tokenizers.Tokenizer.from_file(str(tok_path)).get_vocab_size()
    texts = [" ".join(CORPUS[i:] + CORPUS[:i]) for i in range(4)]  # several windows each
    data = _jsonl(tmp_path / "eval.jsonl", texts)
    report = _compare(
        _gpt2(vocab, 0),
        _gpt2(vocab, 1),
        vocab,
        data,
        tokenizer=str(tok_path),
        context_length=32,
        stride=16,
        verdict=VerdictConfig(significance="report", resamples=200),
    )
    for name in ("loss", "token_accuracy", "bits_per_byte"):
        metric = report["metrics"][name]
        assert metric["clusters"] == 4 and metric["n"] > 4, name


def test_window_bytes_sum_to_the_text_after_its_first_token(tmp_path: Path) -> None:
    tok_path = _tokenizer_json(tmp_path / "tokenizer.json")
    text = CORPUS[2] * 4
    data = _jsonl(tmp_path / "eval.jsonl", [text])
    eval_set = load_eval_set(
        data, options=DataOptions(tokenizer=str(tok_path), context_length=8, stride=3)
    )
    assert eval_set.columns is not None
    first_token_end = tokenizers.Tokenizer.from_file(str(tok_path)).encode(text).offsets[1][0]
    assert eval_set.columns["bytes"].sum() == len(text[first_token_end:].encode())
    assert set(eval_set.columns["doc"].tolist()) == {0}


def test_window_keys_name_the_line_and_characters(tmp_path: Path) -> None:
    data = _jsonl(tmp_path / "eval.jsonl", ["", "héllo wörld, and more text"])
    eval_set = load_eval_set(data, options=DataOptions(context_length=8, stride=4))
    first, second = eval_set.describe(0), eval_set.describe(1)
    assert first.key == "line 2, chars 1–8" and first.text == "éllo wö"
    assert second.key.startswith("line 2, chars ")
    assert second.text is not None and "rld" in second.text


def test_models_with_a_different_tokenizer_compare_on_bits_per_byte_only(tmp_path: Path) -> None:
    one = _folder(tmp_path, "one", _tokenizer_json(tmp_path / "a.json", 300), seed=0)
    other = _tokenizer_json(tmp_path / "b.json", 300, "zebra xylophone quartz " * 20)
    two = _folder(tmp_path, "two", other, seed=1)
    base = transformers.AutoModelForCausalLM.from_pretrained(one, local_files_only=True)
    cand = transformers.AutoModelForCausalLM.from_pretrained(two, local_files_only=True)
    data = _jsonl(tmp_path / "eval.jsonl", CORPUS[:4])
    markdown = tmp_path / "report.md"
    result = _compare(
        base, cand, 300, data, tokenizer="model", context_length=32, markdown_path=markdown
    )
    assert list(result["metrics"]) == ["bits_per_byte"]
    text = markdown.read_text()
    assert "· tokenizer baseline " in text
    assert "- **Note** The models have different tokenizers" in text
    assert result["dataset"]["n"] == 4  # documents, paired across the tokenizers
    assert "different tokenizers" in result["dataset"]["note"]
    assert str(one) in result["dataset"]["tokenizer"] and str(two) in result["dataset"]["tokenizer"]
    with pytest.raises(ConfigError, match="different tokenizers, so loss cannot be compared"):
        _compare(
            base, cand, 300, data, verdict=VerdictConfig(metrics=("loss",), significance="off")
        )


def test_tokenizer_model_reads_the_baseline_folder(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "one", _tokenizer_json(tmp_path / "a.json", 300), seed=0)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    data = _jsonl(tmp_path / "eval.jsonl", CORPUS[:2])
    result = _compare(model, model, 300, data, tokenizer="model")
    assert result["dataset"]["tokenizer"] == str(folder)
    assert result["metrics"]["loss"]["delta"] == 0.0
    with pytest.raises(ConfigError, match="maximum positions"):
        _compare(model, model, 300, data, tokenizer="model", context_length=65)
    with pytest.raises(ConfigError, match="not a model folder"):
        _compare(_gpt2(300, 0), _gpt2(300, 0), 300, data, tokenizer="model")


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused(tmp_path: Path) -> None:
    tok_path = _tokenizer_json(tmp_path / "tokenizer.json", 300)
    data = _jsonl(tmp_path / "eval.jsonl", CORPUS[:2])
    with pytest.raises(ConfigError, match="vocab_size is 280"):
        _compare(_gpt2(280, 0), _gpt2(280, 1), 280, data, tokenizer=str(tok_path))


# ---------------------------------------------------------------- token arrays


def test_token_arrays_are_windowed_and_keyed_by_token_offsets(tmp_path: Path) -> None:
    ids = (np.arange(300) * 7 % 90).astype(np.uint16)
    npy = tmp_path / "val.npy"
    np.save(npy, ids)
    raw = tmp_path / "val.bin"
    ids.tofile(raw)
    options = DataOptions(context_length=64, stride=32, token_dtype="uint16")
    from_npy = load_eval_set(npy, task=_lm(100), options=options)
    from_bin = load_eval_set(raw, task=_lm(100), options=options)
    assert from_npy.fingerprint == from_bin.fingerprint
    assert from_npy.n == 1 + math.ceil((300 - 1 - 64) / 32)
    assert from_npy.describe(0).key == "tokens 1–65"
    assert from_npy.describe(1).key == "tokens 65–97"
    assert from_npy.columns == {}  # no text: no bytes
    inputs, targets = from_npy.dataset[1]
    assert inputs.tolist() == ids[32:96].tolist()
    assert targets[-32:].tolist() == ids[65:97].tolist()
    base, cand = _gpt2(100, 0), _gpt2(100, 1)
    result = _compare(base, cand, 100, npy, context_length=64, stride=32, batch_size=3)
    assert "bits_per_byte" not in result["metrics"] and "loss" in result["metrics"]
    with pytest.raises(ConfigError, match="bits_per_byte needs the text"):
        _compare(
            base, cand, 100, npy, verdict=VerdictConfig(metrics=("bits_per_byte",)),
        )  # fmt: skip


def test_token_arrays_refuse_bad_input(tmp_path: Path) -> None:
    raw = tmp_path / "val.bin"
    np.arange(50, dtype=np.uint16).tofile(raw)
    with pytest.raises(DataError, match="pass token-dtype"):
        load_eval_set(raw, task=_lm(100))
    with pytest.raises(DataError, match="needs vocab_size >= 50"):
        load_eval_set(raw, task=_lm(40), options=DataOptions(token_dtype="uint16"))
    matrix = tmp_path / "m.npy"
    np.save(matrix, np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(DataError, match="1-D array of integer token ids"):
        load_eval_set(matrix, task=_lm(10))


def test_token_byte_ends_follow_the_utf8_text(tmp_path: Path) -> None:
    from regress_action.vocab import load_tokenizer

    tokenizer = load_tokenizer(str(_tokenizer_json(tmp_path / "tokenizer.json", 300)))
    text = CORPUS[2] + " 日本語 🙂"
    encoded = tokenizer.encode(text)
    offsets = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(text)
    starts = [len(text[:start].encode()) for start, _ in offsets.offsets]
    assert encoded.byte_ends.tolist() == [*starts[1:], len(text.encode())]


def test_a_stride_longer_than_the_context_is_refused(tmp_path: Path) -> None:
    data = _jsonl(tmp_path / "eval.jsonl", CORPUS[:1])
    # The options refuse it when both are given; here the context is the default one.
    with pytest.raises(DataError, match="stride 300 is larger than context-length 256"):
        load_eval_set(data, options=DataOptions(stride=300))
