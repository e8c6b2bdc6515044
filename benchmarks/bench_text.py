#!/usr/bin/env python3
"""Text benchmark: a tiny GPT-2 (built from a config, nothing downloaded) on a ~200 kB text with
a BPE tokenizer trained here, sliding windows of 128 tokens moving by 64; prints JSON.

`compare_models` wall time (eval-set loading and tokenization, the paired pass, statistics and
the report; no database) ÷ a bare hand-written loop doing the same work by hand: tokenize the
same documents, build the same windows (every token after a document's first predicted once,
with at least context − stride tokens of left context), run both models under
`inference_mode` and sum each window's token NLL. Also checks that both give the same loss.

    python benchmarks/bench_text.py [--kb 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from regress_action import compare_models
from regress_action.builtin_data import lm_text
from regress_action.spec import EvalConfig, TaskSpec, VerdictConfig

CONTEXT, STRIDE, BATCH = 128, 64, 32


def corpus(kb: int) -> list[str]:
    """~kb kilobytes of generated English-like text as documents of ~2 kB (paragraphs)."""
    text = lm_text(7, kb * 1024).decode("utf-8")
    return [text[i : i + 2048] for i in range(0, len(text), 2048)]


def tokenizer(documents: list[str], folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=["<pad>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(documents, trainer)
    path = folder / "tokenizer.json"
    tok.save(str(path))
    return path


def gpt2(seed: int, vocab: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2,
        n_embd=128,
        n_head=4,
        n_positions=CONTEXT,
        vocab_size=vocab,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


def windows(ids: list[int]) -> list[tuple[list[int], list[int]]]:
    """The Hugging Face perplexity guide's windows: inputs and targets (-100 where not scored)."""
    out, previous_end = [], 0
    for begin in range(0, max(len(ids) - 1, 1), STRIDE):
        end = min(begin + CONTEXT + 1, len(ids))
        inputs = ids[begin : end - 1]
        targets = ids[begin + 1 : end]
        scored_from = max(previous_end - begin - 1, 0)
        targets = [-100] * scored_from + targets[scored_from:]
        out.append((inputs, targets))
        previous_end = end
        if end == len(ids):
            break
    return out


def bare(models: list[torch.nn.Module], documents: list[str], tok_path: Path) -> float:
    """Σ NLL / Σ tokens of the first model, by hand (the reference loop)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_path))
    rows = []
    for encoding in tok.encode_batch(documents, add_special_tokens=False):
        rows += windows(encoding.ids)
    nll, tokens = [0.0, 0.0], 0
    with torch.inference_mode():
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            length = max(len(i) for i, _ in chunk)
            x = torch.zeros((len(chunk), length), dtype=torch.long)
            y = torch.full((len(chunk), length), -100, dtype=torch.long)
            for r, (i, t) in enumerate(chunk):
                x[r, : len(i)] = torch.tensor(i)
                y[r, : len(t)] = torch.tensor(t)
            for m, model in enumerate(models):
                logits = model(x).logits
                nll[m] += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
            tokens += int((y != -100).sum())
    return nll[0] / tokens


def timed(fn: Any, repeats: int) -> tuple[float, Any]:
    best, value = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("regress_action").setLevel(logging.ERROR)
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        documents = corpus(args.kb)
        data = folder / "eval.jsonl"
        data.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
        tok_path = tokenizer(documents, folder)
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(tok_path)).get_vocab_size()
        models = [gpt2(0, vocab), gpt2(1, vocab)]
        task = TaskSpec(modality="text", task="lm", vocab_size=vocab)
        config = EvalConfig(
            dataset=str(data),
            tokenizer=str(tok_path),
            context_length=CONTEXT,
            stride=STRIDE,
            batch_size=BATCH,
            device="cpu",
            workers=0,
            progress=False,
        )
        verdict = VerdictConfig(significance="off")
        bare_s, bare_loss = timed(lambda: bare(models, documents, tok_path), args.repeats)
        engine_s, report = timed(
            lambda: compare_models(*models, None, task, config, verdict=verdict), args.repeats
        )
        stats_s, _ = timed(
            lambda: compare_models(*models, None, task, config, verdict=VerdictConfig()), 1
        )
    engine_loss = report["metrics"]["loss"]["baseline"]
    print(
        json.dumps(
            {
                "text_bytes": sum(len(d.encode()) for d in documents),
                "documents": len(documents),
                "windows": report["dataset"]["n"],
                "context": CONTEXT,
                "stride": STRIDE,
                "vocab": vocab,
                "bare_s": round(bare_s, 3),
                "compare_s": round(engine_s, 3),
                "ratio": round(engine_s / bare_s, 3),
                "compare_with_statistics_s": round(stats_s, 3),
                "ratio_with_statistics": round(stats_s / bare_s, 3),
                "loss_bare": bare_loss,
                "loss_compare": engine_loss,
                "same_loss": abs(bare_loss - engine_loss) <= 1e-6 * abs(bare_loss),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
