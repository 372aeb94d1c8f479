"""What runs on a build node: the Celery worker, source fetching, the engine client."""
