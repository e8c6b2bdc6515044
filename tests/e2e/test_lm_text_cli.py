"""The CLI on LM text: Hugging Face folders registered as runs, compared on a JSONL file with
their own tokenizer (`--tokenizer model`), with another tokenizer (bits per byte only), and on
token arrays; bad input exits 2 with one line. In-process (`main([...])`), like test_cli."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tokenizers
import torch
import transformers

from tests.cli_runner import run_cli

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine, and a penny saved is a penny earned",
    "über café naïve — unicode text costs more bytes than characters",
    "to be or not to be, that is the question",
]


def _tokenizer(extra: str = "") -> object:
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["[UNK]", "<pad>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*CORPUS * 3, extra], trainer)
    return tok


def _folder(root: Path, name: str, seed: int, extra: str = "") -> Path:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=300,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    transformers.GPT2LMHeadModel(config).save_pretrained(root / name)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=_tokenizer(extra))
    fast.save_pretrained(root / name)
    return root / name


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    db = ["--db", f"sqlite:///{tmp_path / 'regress.db'}"]
    for name, seed, extra in (("a", 0, ""), ("b", 1, ""), ("c", 2, "zebra quartz " * 30)):
        folder = _folder(tmp_path, name, seed, extra)
        add = ["runs", "add", folder.name, "--task", "lm", "--vocab-size", "300", *db]
        code, _, err = run_cli(add, tmp_path, monkeypatch)
        assert code == 0, err
    lines = "".join(json.dumps({"text": text * 3}) + "\n" for text in CORPUS)
    (tmp_path / "eval.jsonl").write_text(lines, encoding="utf-8")
    return tmp_path, db


def _compare(base: int, cand: int, *extra: str) -> list[str]:
    return [
        "compare", "--baseline-run-id", str(base), "--candidate-run-id", str(cand),
        "--device", "cpu", "--no-record", "--significance", "off", "--json-out", "r.json",
        *extra,
    ]  # fmt: skip


def test_compare_with_the_model_tokenizer(
    workspace: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, db = workspace
    args = [*_compare(1, 2, "--dataset", "eval.jsonl", "--tokenizer", "model"), *db]
    code, _, err = run_cli(args, root, monkeypatch)
    assert code in (0, 1), err
    report = json.loads((root / "r.json").read_text())
    assert set(report["metrics"]) == {"loss", "perplexity", "token_accuracy", "bits_per_byte"}
    assert Path(report["dataset"]["tokenizer"]).name == "a"
    keys = [example["key"] for example in report["flips"]["loss_increases"]]
    assert keys and all(key.startswith("line ") and ", chars " in key for key in keys)
    # Context beyond the models' 64 positions: refused before any work, in one line.
    code, _, err = run_cli([*args, "--context-length", "128"], root, monkeypatch)
    assert code == 2 and "maximum positions" in err and len(err.strip().splitlines()) == 1


def test_compare_across_tokenizers_on_bits_per_byte(
    workspace: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, db = workspace
    args = [*_compare(1, 3, "--dataset", "eval.jsonl", "--tokenizer", "model"), *db]
    code, _, err = run_cli(args, root, monkeypatch)
    assert code in (0, 1), err
    report = json.loads((root / "r.json").read_text())
    assert list(report["metrics"]) == ["bits_per_byte"]
    assert report["dataset"]["n"] == len(CORPUS)
    assert "different tokenizers" in report["dataset"]["note"]
    code, _, err = run_cli([*args, "--metrics", "loss"], root, monkeypatch)
    assert code == 2 and "only bits_per_byte" in err and len(err.strip().splitlines()) == 1


def test_compare_on_token_arrays(
    workspace: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, db = workspace
    (np.arange(500) % 300).astype(np.uint16).tofile(root / "val.bin")
    args = [*_compare(1, 2, "--dataset", "val.bin"), *db]
    code, _, err = run_cli(args, root, monkeypatch)
    assert code == 2 and "token-dtype" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli([*args, "--token-dtype", "uint16"], root, monkeypatch)
    assert code in (0, 1), err
    report = json.loads((root / "r.json").read_text())
    assert "bits_per_byte" not in report["metrics"]
    assert report["dataset"]["tokenizer"] is None
