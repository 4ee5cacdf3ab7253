"""The queue set-up producers and workers share: the Celery app's configuration, the task and
its message, queue depths, run outcomes, and the names of the worker's classes.

``celery -A tasks worker`` runs the fleet's app, ``tasks.celery.app`` (it was ``tasks.app``,
built when this package was imported; importing ``tasks`` now reads no settings).
"""

from tasks.app_config import celery_config, create_app

__all__ = ["celery_config", "create_app"]
