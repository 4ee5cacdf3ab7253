"""The fleet's app on kombu's *stock* Redis transport, for ``celery -A tests.stock_kombu_app``.

Everything else is the fleet's (pool, consumer, task); only the intake is kombu's own BRPOP, so a
test can run such a worker beside an ``l04 worker`` and show that both read and write the same
layout (the lists, ``unacked``, ``unacked_index``).
"""

from tasks.celery import app

app.conf.broker_transport = None  # the URL's scheme decides: kombu's redis transport

__all__ = ["app"]
