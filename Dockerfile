# syntax=docker/dockerfile:1
#
# Image: registry.example.com/transcription
#
# The CPU image: the enqueue service, the orchestrator, the transcriber, the operator's
# `transcription` command (the migration Job and the admin pod run it too), and, for a
# machine without a GPU, the model server on the CPU. deploy/knative/ and
# docker-compose.yml use the name above; replace the registry with yours in both (the
# `images:` block of deploy/knative/kustomization.yaml).
#
#   docker build -t registry.example.com/transcription:0.1.0 .
#
# The tag is the project's version (pyproject.toml); tests/deploy checks that they agree.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtual environment with the project and its dependencies ---------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The project is installed in editable mode from /app, which is copied into the final
# image with the venv.
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY cli ./cli
COPY services ./services
RUN pip install --upgrade pip setuptools \
    && pip install -e . \
    && python -m compileall -q /app/shared /app/cli /app/services

# --- runtime ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="transcription" \
      org.opencontainers.image.description="Self-hostable media transcription service (CPU services and operator CLI)" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app \
    && mkdir -p /var/lib/transcription/work \
    && chown -R app:app /var/lib/transcription

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app

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
CMD ["serve", "enqueue", "--port", "8080"]
