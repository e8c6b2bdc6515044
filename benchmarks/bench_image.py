#!/usr/bin/env python3
"""What a job pays for the action's image: built from the Dockerfile in every job
(`uses: OWNER/regress-action@main`) or pulled prebuilt (`@vX.Y.Z`: action.yml names
`docker://ghcr.io/...`); prints JSON.

- **build**: `docker build --no-cache` of the Dockerfile, as a job without a layer cache runs it:
  the wall time of each step, and the bytes pip downloads (its "Downloading ... (N MB)" lines).
  The base image is taken as present (a runner pulls it first: `base_compressed_mb`).
- **pull**: the bytes of the built image's layers, gzip-compressed as a registry stores them:
  what a runner downloads for the prebuilt image (`image_compressed_mb`), base included.
- **run**: `regress-action --version` in the image (the container's start and the import).

Needs a Docker engine and a base (tests/image/docker_env.py: started or made when missing, as
`make image-test` does; REGRESS_IMAGE_BASE picks the base). Here the base is the debootstrap one
unless the pinned python:3.11-slim can be pulled; its size is reported apart.

    python benchmarks/bench_image.py
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.image.docker_env import base_image, build_context, docker, docker_daemon

TAG = "regress-action:bench"
MB = 1e6
SIZE = re.compile(r"\((\d+(?:\.\d+)?) (kB|MB|GB)\)")
UNITS = {"kB": 1e3, "MB": 1e6, "GB": 1e9}


def timed_build(base: str) -> dict[str, object]:
    """`docker build --no-cache`, each step's seconds and pip's downloads."""
    with tempfile.TemporaryDirectory(prefix="regress-image-context-") as folder:
        local_torch = build_context(Path(folder))
        args = ["docker", "build", "--no-cache", "--build-arg", f"BASE_IMAGE={base}", "-t", TAG]
        if local_torch:
            args += ["--build-arg", "TORCH_INDEX_URL="]
        started = time.perf_counter()
        steps: list[tuple[str, float]] = []
        downloaded = 0.0
        with subprocess.Popen(
            [*args, folder], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as build:
            assert build.stdout is not None
            for line in build.stdout:
                now = time.perf_counter() - started
                if line.startswith("Step "):
                    steps.append((line.split(":", 1)[1].strip()[:70], now))
                elif "Downloading" in line and (size := SIZE.search(line)):
                    downloaded += float(size[1]) * UNITS[size[2]]
            rc = build.wait()
        total = time.perf_counter() - started
    if rc != 0:
        raise SystemExit(f"docker build failed ({rc})")
    ends = [at for _, at in steps[1:]] + [total]
    timed = [
        {"step": name, "s": round(end - at, 1)} for (name, at), end in zip(steps, ends, strict=True)
    ]
    return {
        "build_s": round(total, 1),
        "steps": len(steps),
        "slow_steps": [step for step in timed if float(step["s"]) >= 1.0],
        "pip_downloaded_mb": round(downloaded / MB, 1),
        "wheels_from_the_context": local_torch,
    }


def compressed_layers(image: str) -> tuple[float, float]:
    """(uncompressed, gzip-compressed) bytes of the image's layers."""
    with tempfile.TemporaryDirectory(prefix="regress-image-save-") as folder:
        saved = Path(folder) / "image.tar"
        done = docker("save", "-o", str(saved), image, timeout=900)
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        raw = packed = 0
        with tarfile.open(saved) as archive:
            for member in archive:
                if not member.name.endswith("layer.tar"):
                    continue
                stream = archive.extractfile(member)
                assert stream is not None
                gzip = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip -6, as registries store
                while chunk := stream.read(1 << 20):
                    raw += len(chunk)
                    packed += len(gzip.compress(chunk))
                packed += len(gzip.flush())
    return raw, packed


def main() -> None:
    with docker_daemon():
        base = base_image()
        build = timed_build(base)
        base_raw, base_packed = compressed_layers(base)
        raw, packed = compressed_layers(TAG)
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            docker("run", "--rm", "--entrypoint", "regress-action", TAG, "--version")
            runs.append(time.perf_counter() - started)
    print(
        json.dumps(
            {
                "base": base,
                "base_mb": round(base_raw / MB, 1),
                "base_compressed_mb": round(base_packed / MB, 1),
                "image_mb": round(raw / MB, 1),
                "image_compressed_mb": round(packed / MB, 1),
                **build,
                "run_version_s": round(min(runs), 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
