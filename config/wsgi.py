"""WSGI entry point (gunicorn). Refuses to start on a production misconfiguration."""

import os

from django.core.wsgi import get_wsgi_application

from config.startup import enforce_startup_config

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
enforce_startup_config("web")
application = get_wsgi_application()
