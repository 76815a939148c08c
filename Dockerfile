# syntax=docker/dockerfile:1
#
# The CPU images, one per target, each installing the package with the extras of the
# services it runs (pyproject.toml's [project.optional-dependencies]):
#
# Image: registry.example.com/transcription (target control)
#   the enqueue API and the orchestrator, and the operator's `transcription` command (the
#   migration Job and the admin pod run it too): no PyAV, faster-whisper or CTranslate2.
# Image: registry.example.com/transcription-worker (target worker)
#   the transcriber (PyAV, faster-whisper's VAD) and, for a machine without a GPU, the
#   model server on the CPU with the bundled tiny.en.
#
# deploy/knative/ and docker-compose.yml use the names above; replace the registry with
# yours in both (the `images:` block of deploy/knative/kustomization.yaml).
#
#   docker build --target control -t registry.example.com/transcription:0.1.0 .
#   docker build --target worker -t registry.example.com/transcription-worker:0.1.0 .
#   (--build-arg DIARIZE=1: with the diarize extra, for speaker labels; RUNBOOK.md)
#
# The tag is the project's version (pyproject.toml); tests/deploy checks that they agree,
# and that the control image's extras pull in no model stack.

ARG PYTHON_IMAGE=python:3.11-slim

# --- source: the project, and a virtual environment to install it into -----------------
FROM ${PYTHON_IMAGE} AS source

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY cli ./cli
COPY services ./services

# --- the environments: the package (not an editable checkout) with each image's extras ---
FROM source AS control-venv
RUN pip install ".[enqueue,orchestrator]"

FROM source AS worker-venv
# DIARIZE=1: also the diarize extra (speaker labels, the transcriber's), with PyTorch for the
# CPU from TORCH_INDEX (PyPI's own is the CUDA build, GBs): about 1.4 GB more.
ARG DIARIZE=0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN if [ "$DIARIZE" = 1 ]; then \
        pip install --index-url "$TORCH_INDEX" torch \
        && pip install ".[transcriber,model-server,diarize]"; \
    else \
        pip install ".[transcriber,model-server]"; \
    fi

# --- runtime: what every image shares ------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.licenses="MIT"

# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app \
    && mkdir -p /var/lib/transcription/work \
    && chown -R app:app /var/lib/transcription

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080 \
    WORK_DIR=/var/lib/transcription/work

USER 10001:10001
WORKDIR /home/app
EXPOSE 8080

# Every service answers GET /healthz; the probe uses only the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"]

ENTRYPOINT ["transcription"]

# --- worker: the transcriber, or the model server on the CPU ---------------------------------
FROM runtime AS worker
LABEL org.opencontainers.image.title="transcription-worker" \
      org.opencontainers.image.description="Self-hostable media transcription service (transcriber; model server on the CPU)"
COPY --from=worker-venv /opt/venv /opt/venv
CMD ["serve", "transcriber", "--port", "8080"]

# --- control: the enqueue API, the orchestrator, the operator CLI (the default target) -----
FROM runtime AS control
LABEL org.opencontainers.image.title="transcription" \
      org.opencontainers.image.description="Self-hostable media transcription service (enqueue API, orchestrator, operator CLI)"
COPY --from=control-venv /opt/venv /opt/venv
CMD ["serve", "enqueue", "--port", "8080"]
