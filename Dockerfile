# syntax=docker/dockerfile:1
# FenceBox: the purifying inference proxy (CPU).  Stages:
#   build            - /app/.venv with fencebox and torch 2.13.0 (the README's set-up command)
#   kserve-upstream  - the same plus KServe, to run an upstream V2 model server (docker/compose.yaml)
#   runtime          - the default: non-root, `fencebox serve` on port 8000
ARG PYTHON=3.11

FROM python:${PYTHON}-slim AS build
# The README's own set-up step (`make serve` = this target, then `fencebox serve`).
# torch is pinned to 2.13.0; pass --build-arg PIP_EXTRA_INDEX_URL=<a CPU-only torch wheel index> to keep
# pip from choosing the multi-GB CUDA build on x86_64.
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md Makefile ./
COPY fencebox ./fencebox
RUN make .venv/.installed-base
# the redis client, for query budgets shared by replicas (rate_limit.backend: redis; docs/scale.md)
RUN .venv/bin/python -m pip install -q -e '.[redis]'

FROM python:${PYTHON}-slim AS kserve-upstream
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1
COPY --from=build /app /app
RUN pip install "kserve==0.21.0" && useradd --create-home --uid 10001 fencebox
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=2).status != 200)"]
ENTRYPOINT ["python", "-m", "fencebox.service.kserve_upstream"]
CMD ["--model", "builtin:mnist", "--name", "mnist", "--http_port", "8080", "--enable_latency_logging", "false"]

FROM python:${PYTHON}-slim AS runtime
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
COPY --from=build /app /app
RUN useradd --create-home --uid 10001 fencebox
USER 10001
WORKDIR /home/fencebox
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"]
ENTRYPOINT ["fencebox", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8000"]
