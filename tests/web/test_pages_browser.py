"""The web pages in a real Chromium: submit the form, watch the build end."""

from __future__ import annotations

import io
import re
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ARTIFACTS / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def anonymous(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context: no session cookie."""
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def page(farm, anonymous: Page) -> Page:
    """A page signed in with the farm's admin token."""
    anonymous.goto(f"{farm.web_url}/sign-in")
    anonymous.fill("#token", farm.token)
    anonymous.click("button[type=submit]")
    expect(anonymous.locator("form.who")).to_contain_text("local-admin")
    return anonymous


def source_archive(tmp_path: Path, dockerfile: str) -> Path:
    path = tmp_path / "source.tar.gz"
    data = dockerfile.encode()
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_form_upload_builds_and_page_follows_it(farm, tiny_image, page, tmp_path):
    archive = source_archive(
        tmp_path,
        f"FROM {tiny_image} AS build\n"
        "RUN echo from-the-browser > /b\n"
        f"FROM {tiny_image}\nCOPY --from=build /b /b\n",
    )
    page.goto(f"{farm.web_url}/builds/new")
    page.check("input[value=archive]")
    page.set_input_files("#archive", str(archive))
    page.fill("#tags", "browser/demo:1")
    page.click("form.submit button[type=submit]")
    expect(page.locator("#state")).to_have_text("succeeded", timeout=120_000)
    expect(page.locator("#log")).to_contain_text("from-the-browser")
    expect(page.locator("#image")).to_contain_text("browser/demo:1@sha256:")
    expect(page.locator("#steps")).to_contain_text("build")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "build-succeeded.png"), full_page=True)

    page.goto(farm.web_url + "/")
    expect(page.locator("table.builds")).to_contain_text("succeeded")


def test_invalid_form_shows_error_beside_field_and_queues_nothing(farm, page):
    page.goto(f"{farm.web_url}/builds/new")
    page.fill("#git_url", "ext::sh%20-c%20id")
    page.click("form.submit button[type=submit]")
    expect(page.locator("#git_url-error")).to_contain_text("http(s)://")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "form-error.png"), full_page=True)


def test_pages_ask_for_a_token_then_return_where_you_were(farm, anonymous):
    anonymous.goto(f"{farm.web_url}/builds/new")
    expect(anonymous.locator("h1")).to_have_text("Sign in")
    anonymous.fill("#token", "farm_0123456789ab_" + "x" * 43)
    anonymous.click("button[type=submit]")
    expect(anonymous.locator("#token-error")).to_contain_text("not known")
    anonymous.fill("#token", farm.stack.create_token("viewer", ["read"]))
    anonymous.click("button[type=submit]")
    # Back where it started, but a read token may not start builds.
    expect(anonymous.locator("main")).to_contain_text("needs a token with the 'submit'")
    anonymous.goto(f"{farm.web_url}/")
    expect(anonymous.locator("form.who")).to_contain_text("viewer · read")
    anonymous.click("form.who button")
    expect(anonymous.locator("h1")).to_have_text("Sign in")
    anonymous.goto(f"{farm.web_url}/")
    expect(anonymous.locator("h1")).to_have_text("Sign in")


def test_live_log_arrives_while_running_and_cancel_stops_it(
    farm, tiny_image, page, tmp_path
):
    word = uuid.uuid4().hex
    archive = source_archive(
        tmp_path,
        f"FROM {tiny_image}\nRUN echo started-{word} && sleep 60 && echo never\n",
    )
    page.goto(f"{farm.web_url}/builds/new")
    page.check("input[value=archive]")
    page.set_input_files("#archive", str(archive))
    page.click("form.submit button[type=submit]")
    # The step's output line, not the line naming the RUN command.
    output = re.compile(rf"#\d+ [\d.]+ started-{word}")
    log_line = page.locator("#log span", has_text=output)
    expect(log_line.first).to_be_visible(timeout=60_000)
    expect(page.locator("#state")).to_have_text("running")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "live-log.png"), full_page=True)

    page.click("#cancel-form button")
    expect(page.locator("#state")).to_have_text("cancelled", timeout=30_000)
    never = page.locator("#log span", has_text=re.compile(r"#\d+ [\d.]+ never"))
    expect(never).to_have_count(0)
    expect(page.locator("#log")).to_contain_text("Build cancelled.")
    page.screenshot(path=str(SCREENSHOTS / "cancelled.png"), full_page=True)

    cancelled_url = page.url
    page.click("#retry-form button")
    expect(page.locator("#state")).to_have_text(re.compile("queued|running"))
    assert page.url != cancelled_url  # the retry is a build of its own
    page.click("#cancel-form button")
    expect(page.locator("#state")).to_have_text("cancelled", timeout=30_000)


def test_the_log_folds_by_stage_and_keeps_the_failed_one_open(
    farm, tiny_image, page, tmp_path
):
    word = uuid.uuid4().hex
    archive = source_archive(
        tmp_path,
        f"FROM {tiny_image} AS prep\nRUN echo prep-{word} > /p\n"
        f"FROM {tiny_image} AS compile\nCOPY --from=prep /p /p\n"
        "RUN cat /p && exit 3\n",
    )
    page.goto(f"{farm.web_url}/builds/new")
    page.check("input[value=archive]")
    page.set_input_files("#archive", str(archive))
    page.click("form.submit button[type=submit]")
    expect(page.locator("#state")).to_have_text("failed", timeout=120_000)

    failed = page.locator("#log details.log-stage[data-stage=compile]")
    expect(failed).to_have_class(re.compile("failed"))
    expect(failed).to_have_attribute("open", "")
    expect(failed.locator(".log-error").first).to_be_visible()
    prep = page.locator("#log details.log-stage[data-stage=prep]")
    expect(prep).not_to_have_attribute("open", "")
    expect(prep.locator("summary")).to_have_text("stage prep")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "log-folded.png"), full_page=True)


def test_the_form_offers_the_stages_of_the_uploaded_dockerfile(farm, page, tmp_path):
    archive = source_archive(
        tmp_path,
        "FROM farm-test/busybox:latest AS deps\nRUN true\n"
        "FROM deps AS test\nRUN true\nFROM deps as runtime\n",
    )
    page.goto(f"{farm.web_url}/builds/new")
    page.check("input[value=archive]")
    page.set_input_files("#archive", str(archive))
    expect(page.locator("#target-hint")).to_contain_text("deps, test, runtime")
    options = page.locator("#target-stages option")
    expect(options).to_have_count(3)
    assert options.evaluate_all("os => os.map(o => o.value)") == [
        "deps",
        "test",
        "runtime",
    ]
    page.fill("#dockerfile", "Nope.Dockerfile")
    page.dispatch_event("#dockerfile", "change")
    expect(page.locator("#target-hint")).to_contain_text("No Nope.Dockerfile")
