# Image of the worker and the simulator (used by docker-compose.yml).
#   docker build -t churn-risk .
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=... -e REDIS_URL=... churn-risk
# Model artifacts: a local artifacts/ directory (e.g. from `python -m training`) is
# baked in at /app/artifacts if present; otherwise mount one there.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# lightgbm's wheel needs the OpenMP runtime, which the slim image lacks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Third-party dependencies first, exactly as locked (sha256-checked), in their own
# layer: a code change then does not reinstall pandas, lightgbm, scikit-learn, ...
COPY requirements/requirements-runtime.txt /tmp/runtime.txt
RUN pip install --require-hashes --no-deps -r /tmp/runtime.txt && rm /tmp/runtime.txt

# The project itself: a regular (non-editable) install; the source tree is then dropped.
COPY . .
RUN pip install --no-deps . \
 && mkdir -p /app/artifacts \
 && if [ -d artifacts ]; then cp -a artifacts/. /app/artifacts/; fi \
 && useradd --create-home --uid 10001 churn \
 && chown -R churn /app \
 && rm -rf /src

# /app: relative defaults (artifacts/models, data, Faust's <app-id>-data state) land here.
WORKDIR /app
USER 10001

# Faust web server: health, metrics, lookup (CHURN_WEB_PORT).
EXPOSE 6066
CMD ["python", "-m", "stream_app", "worker"]
