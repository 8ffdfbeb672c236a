"""ASGI entry point. Refuses to start on a production misconfiguration."""

import os

from django.core.asgi import get_asgi_application

from config.startup import enforce_startup_config

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
enforce_startup_config("web")
application = get_asgi_application()
