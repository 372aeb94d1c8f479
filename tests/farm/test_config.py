from pathlib import Path

import pytest

from farm.config import Settings
from farm.errors import InvalidRequest


def test_settings_read_prefixed_variables_with_types():
    settings = Settings.from_env(
        {
            "FARM_REDIS_URL": "redis://127.0.0.1:7000/1",
            "FARM_WORKER_CONCURRENCY": "4",
            "FARM_ALLOW_FILE_URLS": "yes",
            "FARM_WORK_DIR": "/srv/farm",
            "OTHER": "ignored",
        }
    )
    assert settings.redis_url == "redis://127.0.0.1:7000/1"
    assert settings.worker_concurrency == 4
    assert settings.allow_file_urls is True
    assert settings.work_dir == Path("/srv/farm")


def test_explicit_overrides_win_and_none_is_ignored():
    settings = Settings.from_env(
        {"FARM_WORKER_CONCURRENCY": "4"}, worker_concurrency=None, queue="urgent"
    )
    assert settings.worker_concurrency == 4 and settings.queue == "urgent"


def test_bad_number_names_the_variable():
    with pytest.raises(InvalidRequest, match="FARM_WORKER_CONCURRENCY"):
        Settings.from_env({"FARM_WORKER_CONCURRENCY": "many"})
