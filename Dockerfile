# The regress-action container: a Docker action runs this image with the workspace mounted at
# /github/workspace (the working directory) and the inputs as INPUT_* variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/regress-action

# git reads the baseline checkpoint from the pull request's base commit (baseline-checkpoint-ref).
# Not pinned: Debian replaces a package version with its security fix, so a pin stops building.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

# CPU-only torch first, in its own layer: it is the largest and changes least. With torch
# already installed, the package's "torch>=2.3" requirement needs no CUDA download. Its version
# is pinned in requirements-torch.txt, which the Makefile reads too.
COPY requirements-torch.txt ./
RUN pip install -r requirements-torch.txt --index-url https://download.pytorch.org/whl/cpu

# Then the package's other dependencies, read from pyproject.toml alone, so editing the source
# does not invalidate this layer: the core ones and the hf (transformers, tokenizers) and arrow
# (pyarrow) extras, so Hugging Face folders, tokenizers and Parquet eval sets work in the Action.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(chr(10).join(p['dependencies'] + p['optional-dependencies']['hf'] + p['optional-dependencies']['arrow']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the package (templates ship inside it as regress_action.templates). No USER: the runner
# mounts the workspace owned by the runner's user and the action must be able to write there.
COPY README.md ./
COPY regress_action ./regress_action
COPY templates ./templates
RUN pip install . \
    && regress-action --version

ENTRYPOINT ["regress-action", "action"]
