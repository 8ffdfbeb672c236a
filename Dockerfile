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
COPY manage.py pyproject.toml ./
COPY config ./config
COPY trader ./trader
COPY ingest ./ingest
COPY signals ./signals
COPY execution ./execution

# Settings generate throwaway dev keys when loaded with DJANGO_ENV=dev: keep them in a temporary
# VAR_DIR and delete it in the same layer, so no key is baked into the image.
# /app/var is where the compose stack mounts its shared volume; it must belong to the app user.
RUN VAR_DIR=/tmp/build-var DJANGO_ENV=dev python manage.py collectstatic --noinput \
    && rm -rf /tmp/build-var \
    && mkdir -p /app/var \
    && chown app:app /app/var

USER app

EXPOSE 8000

# --preload loads the app in gunicorn's master: on a production misconfiguration
# (config.startup) the master itself exits with status 2 instead of respawning workers forever.
CMD ["gunicorn", "--preload", "config.wsgi:application", "-b", "0.0.0.0:8000"]
