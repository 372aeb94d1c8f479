"""gunicorn settings: listen on PORT from the environment on every interface."""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WORKERS", "2"))
accesslog = "-"
