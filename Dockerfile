# The regress-action container: a Docker action runs this image with the workspace mounted at
# /github/workspace (the working directory) and the inputs as INPUT_* variables.
#
# Reproducible: the base image is pinned by digest and every Python package by version and hash
# (requirements.lock, `make lock`), so two builds of one commit install the same bytes. Another
# Python 3.11 base (a mirror's copy, one made with debootstrap) can be given with
# --build-arg BASE_IMAGE=...; it needs python3 with venv and pip, and apt.
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# Stage 1: a virtual environment with the locked packages and the package itself. Only the
# environment is copied into the image, so what the build needed stays behind.
FROM ${BASE_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/regress-action/bin:$PATH

WORKDIR /build

# torch's CPU build comes from PyTorch's own index; the lock's hashes say which file is right, so
# the second index cannot substitute a package. Empty: the indexes of pip's settings alone.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# A build context may carry a pip-build/ folder for a machine that reaches the package registry
# only through a mirror or a TLS-inspecting proxy: its pip.conf (and the CA bundle or wheels it
# names under /build/) is used for this stage only. The repository has none.
COPY requirements.lock pip-buil[d] /build/
RUN if [ -f pip.conf ]; then export PIP_CONFIG_FILE=/build/pip.conf; fi \
    && python3 -m venv /opt/regress-action \
    && pip install --require-hashes --no-deps -r requirements.lock \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}

# Then the package (templates ship inside it as regress_action.templates), built with the locked
# setuptools: nothing unpinned is fetched. `pip check`: the lock holds every dependency.
COPY pyproject.toml README.md ./
COPY regress_action ./regress_action
COPY templates ./templates
RUN pip install --no-deps --no-build-isolation . \
    && pip check \
    && regress-action --version

# Stage 2: the image. No USER: the runner mounts the workspace owned by its own user and runs the
# container as root; `regress-action action` then runs as the workspace's owner, so the files it
# leaves there (reports, the ExperimentDB) belong to the runner's user like the checkout.
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/regress-action/bin:$PATH

# git reads the baseline checkpoint from the pull request's base commit (baseline-checkpoint-ref).
# Not pinned: Debian replaces a package version with its security fix, so a pin stops building.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

COPY --from=build /opt/regress-action /opt/regress-action

ENTRYPOINT ["regress-action", "action"]
