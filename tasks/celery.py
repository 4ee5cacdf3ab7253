"""The fleet's Celery app as the ``celery`` command and ``l04 worker`` / ``l04 flower`` run it.

``celery -A tasks worker`` finds it here by Celery's convention (``<package>.celery``).
It is the app a worker runs, with the worker's classes (:mod:`tasks.worker_classes`). Importing
this module reads the settings from the environment; a producer never imports it
(``ModelGateway`` builds its own app from its settings with
:func:`tasks.app_config.create_app`).
"""

from config.settings import get_settings
from tasks.app_config import create_app
from tasks.inference import register
from tasks.worker_classes import worker_config

settings = get_settings()
app = create_app(settings)
app.conf.update(worker_config(settings.effective_broker_url))
infer = register(app)

__all__ = ["app", "infer"]
