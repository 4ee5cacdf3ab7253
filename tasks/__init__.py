"""The queue set-up producers and workers share: the Celery app's configuration, the task
message, queue depths, and the names of the worker's classes. ``celery -A tasks worker`` runs
the app in :mod:`tasks.celery`.
"""
