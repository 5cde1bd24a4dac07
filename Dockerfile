# Image of the worker, the trainer and the simulator (used by docker-compose.yml).
#   docker build -t churn-risk .
#   docker run --rm -v "$PWD/artifacts/models:/models:ro" -p 127.0.0.1:6066:6066 \
#     -e KAFKA_BOOTSTRAP_SERVERS=... -e REDIS_URL=... churn-risk
#
# Model artifacts are NOT in the image: the worker reads them from /models, a volume
# mounted read-only (the trainer writes the same volume; the worker hot-reloads a new
# CURRENT). No VOLUME instruction: it would give every container started without
# the mount an empty anonymous volume, where an explicit mount is what is meant.

# The official image, pinned by the digest of its multi-arch index (python:3.11.17-slim-trixie,
# which python:3.11-slim pointed at in October 2026). To refresh:
#   docker buildx imagetools inspect python:3.11-slim   (the "Digest:" line)
ARG PYTHON_IMAGE=python:3.11.17-slim-trixie@sha256:45037981b62b34b44602584fccbc4d884d5f7dc92c7ee86bb38a698a79fe1e51

# ---- build: the locked third-party dependencies, in a virtualenv copied to the final stage
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements/requirements-runtime.txt /tmp/requirements-runtime.txt
# Exactly the lock: every file checked against its sha256, nothing resolved (--no-deps),
# wheels only (no sdist build runs code or fetches a build backend outside the lock).
# faust-streaming 0.15.3 publishes x86_64 wheels only, so the image is linux/amd64.
# The venv has no pip or setuptools of its own; the base image's pip installs into it.
RUN python -m venv --without-pip /opt/venv \
 && python -m pip --python /opt/venv/bin/python install \
      --require-hashes --no-deps --only-binary=:all: -r /tmp/requirements-runtime.txt

# ---- runtime
FROM ${PYTHON_IMAGE}

# lightgbm's wheel needs the OpenMP runtime, which the slim image lacks.
# The final stage has no pip, setuptools or wheel either: nothing installs at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && python -m pip uninstall --yes --quiet pip setuptools wheel \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin churn \
 && install -d -o churn -g churn -m 0755 /models /data

COPY --from=build /opt/venv /opt/venv

# The project's own packages are copied, not pip-installed: building the project
# would fetch its build backend (setuptools) from the network, outside the lock.
# Byte-compiled here because the container's root filesystem may be read-only.
WORKDIR /app
COPY stream_app stream_app
COPY feature_store feature_store
COPY scoring scoring
COPY training training
COPY schemas schemas
COPY simulator simulator
RUN python -m compileall -q /app

# CHURN_WEB_BIND: inside the container's own network namespace, 0.0.0.0 is what makes
# the port reachable at all; who can reach it is decided where it is published
# (docker-compose.yml: 127.0.0.1 only).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    CHURN_MODELS_DIR=/models \
    CHURN_DATA_DIR=/data \
    CHURN_WEB_PORT=6066 \
    CHURN_WEB_BIND=0.0.0.0

USER 10001:10001

# Faust web server: health, metrics, lookup (CHURN_WEB_PORT).
EXPOSE 6066
# Python's urllib, so the image needs no curl. /health answers non-2xx when unhealthy,
# and urlopen raises on that.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CHURN_WEB_PORT', '6066') + '/health', timeout=4)"]
CMD ["python", "-m", "stream_app", "worker"]
