"""The fleet's Celery app as the ``celery`` command and ``l04 worker`` / ``l04 flower`` run it.

``celery -A tasks worker`` finds it here by Celery's convention (``<package>.celery``).
Importing this module reads the settings from the environment; a producer never imports it
(``ModelGateway`` builds its own app from its settings with :func:`tasks.app.create_app`).
"""

from config.settings import get_settings
from tasks.app import create_app
from tasks.inference import register

app = create_app(get_settings())
infer = register(app)

__all__ = ["app", "infer"]
