"""WSGI entry point (gunicorn mist.wsgi)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mist.settings")
application = get_wsgi_application()
