"""Benchmark: a whole LM comparison of 200,000 examples with statistics, its peak memory and the
size of what it writes (the JSON report, the ExperimentDB row, the per-example records file).

Run: `.venv/bin/python benchmarks/bench_report.py [--n N] [--records parquet|npz|none]`.

Each side runs in a fresh process, so that its peak RSS (`resource.getrusage`) is its own:
- `engine`: `regress-action compare` (in the child's process) on a `.npy` token stream cut in
  windows of 16 tokens, two small bigram LMs registered with `runs add`, the CLI's default
  verdict (significance `gate`, every metric tested), recorded in a SQLite ExperimentDB, JSON +
  Markdown + records file written;
- `bare`: the same two models over the same windows in a plain torch loop that keeps each
  window's summed NLL and token count and prints the two losses: what any evaluation must hold.
Prints JSON: each side's wall time and peak RSS, their ratios, and the sizes. Targets: peak RSS
≤ 1.5 GB at n = 200,000; the JSON report and its DB row independent of n (they list the 100
largest loss increases and count the others).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONTEXT = 16
VOCAB = 256


BIGRAM = """
import torch


def build():
    return torch.nn.Sequential(torch.nn.Embedding(256, 64), torch.nn.Linear(64, 256))
"""


def bigram_lm(seed: int):  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Embedding(VOCAB, 64), torch.nn.Linear(64, VOCAB))
    return model.eval()


def make_data(folder: Path, n: int) -> Path:
    import numpy as np

    path = folder / "tokens.npy"
    rng = np.random.default_rng(0)
    # Windows of CONTEXT targets need one token of context before the first.
    np.save(path, rng.integers(0, VOCAB, n * CONTEXT + 1, dtype=np.uint16))
    return path


def engine(folder: Path, records: str) -> dict[str, object]:
    """The CLI as a user runs it (in this process): two runs registered, then `compare`."""
    import contextlib
    import io

    from regress_action.cli import main as cli
    from regress_action.models import save_checkpoint

    os.chdir(folder)
    (folder / "bigram.py").write_text(BIGRAM)
    os.environ["REGRESS_DB"] = f"sqlite:///{folder / 'regress.db'}"
    for seed in (0, 1):
        save_checkpoint(bigram_lm(seed), folder / f"m{seed}.safetensors", "safetensors")
        with contextlib.redirect_stdout(io.StringIO()):
            cli(
                ["runs", "add", f"m{seed}.safetensors", "--task", "lm", "--factory", "bigram:build"]
            )
    extra = [] if records == "none" else ["--records-path", f"records.{records}"]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli([
            "compare", "--baseline-run-id", "1", "--candidate-run-id", "2",
            "--dataset", "tokens.npy", "--context-length", str(CONTEXT), "--stride", str(CONTEXT),
            "--batch-size", "256", "--device", "cpu",
            "--json-out", "report.json", "--markdown-out", "report.md", *extra,
        ])  # fmt: skip
    wall = time.perf_counter() - start
    if code not in (0, 1):
        raise SystemExit(f"compare exited {code}")
    report = json.loads((folder / "report.json").read_text())
    return {
        "n": report["dataset"]["n"],
        "loss": [report["metrics"]["loss"]["baseline"], report["metrics"]["loss"]["candidate"]],
        "loss_increases_listed": len(report["flips"]["loss_increases"]),
        "loss_increases_count": report["flips"]["loss_increases_count"],
        "significance": report["stats"]["significance"],
        "wall_s": wall,
    }


def bare(folder: Path) -> dict[str, object]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    start = time.perf_counter()
    tokens = np.load(folder / "tokens.npy", mmap_mode="r")
    n = (len(tokens) - 1) // CONTEXT
    losses = []
    for model in (bigram_lm(0), bigram_lm(1)):
        nll, count = np.empty(n), np.empty(n)
        with torch.inference_mode():
            for first in range(0, n, 256):
                last = min(n, first + 256)
                span = np.asarray(tokens[first * CONTEXT : last * CONTEXT + 1], dtype=np.int64)
                ids = torch.from_numpy(span[:-1].reshape(-1, CONTEXT))
                targets = torch.from_numpy(span[1:].reshape(-1, CONTEXT))
                logits = model(ids)
                loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
                nll[first:last] = loss.view(-1, CONTEXT).sum(dim=1).double().numpy()
                count[first:last] = CONTEXT
        losses.append(float(nll.sum() / count.sum()))
    return {"n": n, "loss": losses, "wall_s": time.perf_counter() - start}


def child(side: str, folder: Path, records: str) -> None:
    result = engine(folder, records) if side == "engine" else bare(folder)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run_child(side: str, folder: Path, records: str) -> dict[str, object]:
    command = [sys.executable, __file__, "--child", side, "--folder", str(folder)]
    done = subprocess.run(
        [*command, "--records", records], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{side} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="examples (windows)")
    parser.add_argument("--records", choices=["parquet", "npz", "none"], default="parquet")
    parser.add_argument("--child", choices=["engine", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.folder, args.records)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_data(folder, args.n)
        ours = run_child("engine", folder, args.records)
        reference = run_child("bare", folder, args.records)
        with sqlite3.connect(folder / "regress.db") as conn:
            (row,) = conn.execute("SELECT length(report_json) FROM comparisons").fetchone()
        sizes = {
            "report_json_bytes": (folder / "report.json").stat().st_size,
            "db_report_json_bytes": row,
            "records_file_bytes": (
                os.path.getsize(folder / f"records.{args.records}")
                if args.records != "none"
                else None
            ),
        }
    print(
        json.dumps(
            {
                "n": args.n,
                "engine": ours,
                "bare": reference,
                "wall_ratio": round(float(ours["wall_s"]) / float(reference["wall_s"]), 2),  # type: ignore[arg-type]
                "rss_ratio": round(float(ours["peak_rss_mb"]) / float(reference["peak_rss_mb"]), 2),  # type: ignore[arg-type]
                **sizes,
                "target_peak_rss_mb": 1536,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
