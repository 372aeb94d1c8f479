"""ensure_base_images against a real engine: debootstrap, busybox, extra CAs, reuse."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from workers.baseimages import (
    BaseImageCatalog,
    BaseImageSettings,
    detect_debian_mirror,
    ensure_base_images,
)

pytestmark = pytest.mark.integration

# A self-signed certificate made once for this test; its key was thrown away.
TEST_CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIDPzCCAiegAwIBAgIUYsMsVmvJ3Sonkh2LrPLRIRcYxLIwDQYJKoZIhvcNAQEL
BQAwLjEsMCoGA1UEAwwjRmFybSBUZXN0IENBIChub3QgdHJ1c3RlZCBhbnl3aGVy
ZSkwIBcNMjYxMjA0MTU1MTEwWhgPMjEyNjExMTAxNTUxMTBaMC4xLDAqBgNVBAMM
I0Zhcm0gVGVzdCBDQSAobm90IHRydXN0ZWQgYW55d2hlcmUpMIIBIjANBgkqhkiG
9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxj3luZ+T03JE4JuU0Gkdy0l/ki+OhmgOYWeY
GbwrR22OxFBLLs1aGLE1lSQwI9kwMWAc+VJN6IAll+344uE/nhJ+OALF+RroRX8K
exk9XpJu+ZBHQiCJ/1204Jix7IQz+iCNa/F6ukcx8DF+o3+DZ2HPVilE0Q/md5+P
bh3CYnsxW99WsOogNcevrJDeCIy7xSDM7n0lOcka8DEGj0W8MjPte5p3W5N54wF0
zMs6VNWRsiPM2SrmTUAghuD82pH6AWdlHwcgnu+KBsNjLo3XvM97kNIku4ByzMdm
c5yQI+fn8r8ny1bPZNR7fqZ9e3Tg4rKr28Z5VGVLbKxu64vYfQIDAQABo1MwUTAd
BgNVHQ4EFgQUNqiSnYCax/Rza++8cSeHssxbNUQwHwYDVR0jBBgwFoAUNqiSnYCa
x/Rza++8cSeHssxbNUQwDwYDVR0TAQH/BAUwAwEB/zANBgkqhkiG9w0BAQsFAAOC
AQEAODgsPrMqAzOeUucUNnG2RyT3llqSqHvY6V2yjJcOvdJy7he2qJ86f3AW5y76
UxuQXR+4opM0BwFkTgUUYJoG54c9BWwVK8gleIkpqVXz5ORinWfB1Q4HxQXdm4QA
5iORhgRTuRvs682hXW0IEA6vuJbqSeRXVMVK9mSeob3Bd48h+gzBBg8R3OkRsniO
cPtsuQyaaOPynuJDNz1+LB7QI1lGRwN6UDYjAV/BF95DBpyTXJGlEGk07Lu7eRvV
oW1a6SKjJ2jjD9ILEj/yGpwVhkPTIvPDPm0vworruNIFXz5g9TvurGi/bldzNNjN
zOmfl8xliFpKYubrv8segYXA5Q==
-----END CERTIFICATE-----
"""


@pytest.fixture
def api(engine_url: str) -> Iterator[docker.APIClient]:
    client = docker.APIClient(base_url=engine_url, timeout=600)
    yield client
    client.close()


@pytest.fixture
def settings(tmp_path: Path) -> BaseImageSettings:
    """Settings for a namespace of this test's own, so it builds fresh images."""
    ca_file = tmp_path / "farm-test-ca.crt"
    ca_file.write_text(TEST_CA_PEM)
    return BaseImageSettings(
        mirror=detect_debian_mirror(suite="bookworm"),
        extra_ca_files=(ca_file,),
        namespace=f"farm-test-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
def names(api: docker.APIClient, settings: BaseImageSettings) -> Iterator[list[str]]:
    catalog = BaseImageCatalog(settings.namespace, settings.suite)
    wanted = [catalog.names()[0], catalog.names()[1]]
    yield wanted
    for name in wanted:
        with contextlib.suppress(docker.errors.ImageNotFound):
            api.remove_image(name, force=True)


def run_output(api: docker.APIClient, image: str, command: list[str]) -> str:
    """Run ``command`` in a throwaway container and return what it printed."""
    container = api.create_container(image, command=command)
    try:
        api.start(container)
        assert api.wait(container, timeout=120)["StatusCode"] == 0
        return api.logs(container).decode()
    finally:
        api.remove_container(container, force=True)


def test_ensure_base_images_imports_debian_with_the_extra_ca_and_busybox_once(
    api: docker.APIClient, settings: BaseImageSettings, names: list[str]
) -> None:
    debian, busybox = names
    assert ensure_base_images(api, settings, names=names) == names
    first_ids = [api.inspect_image(name)["Id"] for name in names]

    bundle = run_output(api, debian, ["cat", "/etc/ssl/certs/ca-certificates.crt"])
    assert TEST_CA_PEM.strip() in bundle
    folder = run_output(api, debian, ["ls", "/usr/local/share/ca-certificates"])
    assert "farm-test-ca.crt" in folder.split()
    assert run_output(api, busybox, ["sh", "-c", "echo $((6 * 7))"]).strip() == "42"

    assert ensure_base_images(api, settings, names=names) == names
    assert [api.inspect_image(name)["Id"] for name in names] == first_ids
