# syntax=docker/dockerfile:1
# chat-api image: `docker build -t chat-api .`, then `docker run -p 8000:8000 chat-api`.
# Runtime dependencies only (requirements.txt); tests and linters stay out of the image.

# --- builder: a virtualenv with the pinned runtime dependencies ----------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt

# --- runtime: the venv, the code and the migrations, run as a non-root user ----------------
FROM python:3.11-slim AS runtime

# The image runs with APP_ENV=production, so authentication is on and required: the
# service refuses to start with AUTH_ENABLED=false. Set JWT_SECRET (HS256) or
# JWT_PUBLIC_KEY (RS256), or create API keys in the running container with
# `docker compose exec api python -m app.cli keys create --user alice`.
ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    LOG_FORMAT=json \
    HOST=0.0.0.0 \
    PORT=8000

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app

WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY alembic.ini ./
COPY alembic/ ./alembic/
COPY app/ ./app/
# Compile once at build time: the code is read-only for the app user.
RUN python -m compileall -q app alembic \
    && mkdir -p /app/data \
    && chown app:app /app/data

# The default DATABASE_URL is SQLite at ./data/chat.db, i.e. /app/data/chat.db.
VOLUME ["/app/data"]
USER app
EXPOSE 8000

# Liveness only (/health touches no dependency). No curl in the slim image, so Python it is.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/health', timeout=4)"]

# Validates configuration, applies migrations, then serves (see app/__main__.py).
CMD ["python", "-m", "app"]
