# One image for web, worker and beat (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app

# Runtime dependencies only; every pin has a manylinux wheel, so no compiler is needed.
COPY requirements.txt ./
RUN pip install -r requirements.txt

# The application only, listed by name: the checkout also holds .venv/, .env and var/ (dev keys,
# SQLite), none of which may end up in an image.
COPY manage.py pyproject.toml gunicorn.conf.py ./
COPY config ./config
COPY trader ./trader
COPY ingest ./ingest
COPY signals ./signals
COPY execution ./execution

# Static files for whitenoise, which serves them from gunicorn when DJANGO_ENV=production.
# Collected with the production storage (CompressedStaticFilesStorage: gzip copies too). Production
# settings never generate keys (an unset SECRET_KEY becomes a random key for this one process), and
# the filesystem-broker folder they create goes in a temporary VAR_DIR, deleted in the same layer.
# /app/var is where the compose stack mounts its shared volume; it must belong to the app user.
RUN VAR_DIR=/tmp/build-var DJANGO_ENV=production python manage.py collectstatic --noinput \
    && rm -rf /tmp/build-var \
    && mkdir -p /app/var \
    && chown app:app /app/var

USER app

EXPOSE 8000

# Run from WORKDIR /app, so gunicorn loads ./gunicorn.conf.py: bind GUNICORN_BIND (default
# 0.0.0.0:8000), WEB_CONCURRENCY workers (default 2), timeout 30 s, access log on stdout. Its
# on_starting hook runs the start-up check (config.startup) in the master, so a misconfigured
# production web exits once with status 2 instead of respawning failing workers forever.
CMD ["gunicorn", "config.wsgi:application"]
