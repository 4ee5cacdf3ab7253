"""The Celery application (``celery -A tasks worker``) and the inference task."""

from config.settings import get_settings
from tasks.app import celery_config, create_app
from tasks.inference import register

app = create_app(get_settings())
infer = register(app)

__all__ = ["app", "celery_config", "create_app", "infer"]
