"""The console's web UI in a real browser: what an administrator sees.

Debian's chromium, driven by Playwright, against a real ``shoal console`` process on
loopback over HTTPS (its self-signed certificate is accepted by the browser context).
Any script error, CSP violation or unexpected failed request that the browser reports
fails the test. Chromium logs every HTTP error answer to a fetch as a console error,
so each test names the refusals it expects, such as a 401 for a wrong password.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    Request,
    expect,
    sync_playwright,
)
from playwright.sync_api import (
    TimeoutError as PlaywrightTimeout,
)

from shoal import __version__
from shoal.core.signing import SigningKey
from shoal.licensing import issue_licence
from shoal.server.console_link import (
    ConsoleLink,
    DownloadTotals,
    ReportedBan,
    ReportedClient,
    ReportedHolders,
)

from .process import ConsoleProcess
from .vendor import VENDOR_KEY

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and no background traffic: without the networking flags chromium tries to
# reach the internet (updates, sync, field trials), which these tests never need.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000
# How chromium logs an HTTP error answer to any request of the page.
HTTP_ERROR_LOGGED = re.compile(r"the server responded with a status of (\d+)")

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed at /usr/bin/chromium (as root, make test "
        "installs it)",
    ),
    # Never beside a test that adds interfaces (see ``in_browser``), nor beside a timed one.
    pytest.mark.serial,
]


@dataclass
class ConsoleUI:
    """A browser page on a console, and what the browser reported going wrong on it."""

    console: ConsoleProcess
    page: Page
    # Before logging in, the page asks who is logged in: 401 is the answer for nobody.
    refusals_expected: set[tuple[int, str]] = field(
        default_factory=lambda: {(401, "/api/v1/auth/me")}
    )
    refusals: list[tuple[int, str]] = field(default_factory=list)
    script_problems: list[str] = field(default_factory=list)
    network_changed: bool = False
    screenshots: Path | None = None

    def screenshot(self, name: str) -> Path:
        """Save what the page shows now (``SHOAL_SCREENSHOTS``: where to keep them)."""
        assert self.screenshots is not None
        self.screenshots.mkdir(parents=True, exist_ok=True)
        path = self.screenshots / f"{name}.png"
        self.page.screenshot(path=path, full_page=True)
        return path

    def watch(self) -> None:
        self.page.on("pageerror", lambda error: self.script_problems.append(f"{error}"))
        self.page.on("console", self._console_message)
        self.page.on("requestfailed", self._request_failed)

    def _request_failed(self, request: Request) -> None:
        self.script_problems.append(f"request failed: {request.url} {request.failure}")
        if request.failure == "net::ERR_NETWORK_CHANGED":
            self.network_changed = True

    def _console_message(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        # Also requests the page makes by itself (its icon) are seen only here.
        refused = HTTP_ERROR_LOGGED.search(message.text)
        if refused:
            path = urlsplit(message.location.get("url", "")).path
            self.refusals.append((int(refused.group(1)), path))
        else:
            self.script_problems.append(f"console error: {message.text} {message.location}")

    def expect_refusal(self, status: int, path: str) -> None:
        """Declare that the console refusing ``path`` with ``status`` is part of the test."""
        self.refusals_expected.add((status, path))

    def problems(self) -> list[str]:
        unexpected = [
            f"unexpected HTTP {status} for {path}"
            for status, path in self.refusals
            if (status, path) not in self.refusals_expected
        ]
        return self.script_problems + unexpected

    def submit_login(self, password: str) -> None:
        form = self.page.locator("#login-form")
        form.get_by_label("Username").fill("admin")
        form.get_by_label("Password").fill(password)
        form.get_by_role("button", name="Log in").click()

    def log_in(self) -> None:
        """Log in as the console's administrator and wait for the page to show its data."""
        self.page.goto("/")
        self.submit_login(self.console.password or "")
        expect(self.page.locator("#about")).to_contain_text("signing key")

    def open_tab(self, name: str) -> None:
        self.page.locator("nav").get_by_role("button", name=name, exact=True).click()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def console_ui(browser: Browser, data_dir: Path) -> Iterator[ConsoleUI]:
    """A console of its own, and a fresh browser context (no cookies, no storage) on it."""
    console = ConsoleProcess(data_dir)
    try:
        console.start()
        context = browser.new_context(ignore_https_errors=True, base_url=console.base_url)
        context.set_default_timeout(TIMEOUT_MS)
        try:
            ui = ConsoleUI(console, context.new_page())
            ui.screenshots = Path(os.environ.get("SHOAL_SCREENSHOTS", data_dir.parent / "shots"))
            ui.watch()
            yield ui
        finally:
            context.close()
    finally:
        console.stop()


def in_browser(scenario: Callable[[ConsoleUI], None]) -> Callable[[Browser, Path], None]:
    """The test that runs ``scenario`` on a fresh console in a fresh browser context.

    It fails on anything the browser reports going wrong, and on whatever ``scenario``
    asserts. Chromium fails the requests it is connecting when the machine's network
    changes (an interface added anywhere on the host, as tests in network namespaces
    do): a scenario that failed after such a change runs once more, anew.
    """

    def test(browser: Browser, tmp_path: Path) -> None:
        for attempt in (1, 2):
            with console_ui(browser, tmp_path / f"console-{attempt}") as ui:
                try:
                    scenario(ui)
                    ui.screenshot(scenario.__name__.removeprefix("test_"))
                    assert ui.problems() == [], "the browser reported problems on the page"
                    return
                except Exception:
                    if attempt == 2 or not ui.network_changed:
                        raise
                    warnings.warn(
                        f"{scenario.__name__}: the network changed under chromium; ran again",
                        stacklevel=1,
                    )

    test.__name__ = test.__qualname__ = scenario.__name__
    test.__doc__ = scenario.__doc__
    return test


def licence_key(seats: int, vendor_key: SigningKey | None = None) -> str:
    vendor_key = vendor_key or VENDOR_KEY
    return issue_licence(vendor_key, "Acme", seats, date(2099, 1, 1), date.today())


@in_browser
def test_login_shows_the_error_then_the_app_and_who_is_logged_in(ui: ConsoleUI) -> None:
    page = ui.page
    ui.expect_refusal(401, "/api/v1/auth/login")
    page.goto("/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()

    ui.submit_login("not the password")
    expect(page.locator("#login-error")).to_have_text("wrong username or password")
    expect(page.locator("#app")).to_be_hidden()

    ui.log_in()
    expect(page.locator("#app")).to_be_visible()
    expect(page.get_by_role("heading", name="Log in")).to_be_hidden()
    expect(page.locator("#who")).to_contain_text("admin")
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    # Each tab shows its own panel and hides the others.
    tabs = [
        "Dashboard",
        "Applications",
        "Assignments",
        "Devices",
        "Topology",
        "P2P servers",
        "P2P settings",
        "Licence",
        "Administrators",
    ]
    for tab in tabs:
        ui.open_tab(tab)
        for other in tabs:
            heading = page.locator("main").get_by_role("heading", name=other, exact=True)
            if other == tab:
                expect(heading).to_be_visible()
            else:
                expect(heading).to_be_hidden()


@in_browser
def test_repeated_wrong_passwords_are_throttled_and_the_page_says_how_long(
    ui: ConsoleUI,
) -> None:
    page = ui.page
    ui.expect_refusal(401, "/api/v1/auth/login")
    ui.expect_refusal(429, "/api/v1/auth/login")
    page.goto("/")

    def attempt(number: int) -> int:
        with page.expect_response("**/api/v1/auth/login") as answer:
            ui.submit_login(f"wrong password {number}")
        return answer.value.status

    assert [attempt(number) for number in range(5)] == [401] * 5
    # The block after the fifth failure lasts 1 s, then 2, 4, 8...: on a machine so
    # loaded that an attempt takes longer than the block, the next one may still be
    # checked (401), but the doubling outgrows any such delay within a few attempts.
    statuses = []
    while 429 not in statuses:
        assert len(statuses) < 6, f"never throttled: {statuses}"
        statuses.append(attempt(5 + len(statuses)))
    assert set(statuses) <= {401, 429}, statuses
    expect(page.locator("#login-error")).to_contain_text("too many failed logins")
    expect(page.locator("#login-error")).to_contain_text("try again in")
    expect(page.locator("#app")).to_be_hidden()


@in_browser
def test_uploaded_application_appears_in_the_table(ui: ConsoleUI) -> None:
    page = ui.page
    ui.log_in()
    ui.open_tab("Applications")
    form = page.locator("#upload-form")
    form.get_by_label("Name").fill("Notepad++")
    form.get_by_label("Version").fill("8.6.4")
    form.locator("input[type=file]").set_input_files(
        {"name": "npp.exe", "mimeType": "application/octet-stream", "buffer": b"x" * 3000}
    )
    form.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-status")).to_have_text("done")
    expect(page.locator("#upload-progress")).to_have_attribute("value", "100")
    row = page.locator("#applications-table tr").filter(has_text="Notepad++")
    # Names first; the content ID only as a detail.
    expect(row.locator("td")).to_have_text(
        [
            "Notepad++",  # application
            "8.6.4",  # version
            "2.9 KiB",  # size of the 3000 bytes uploaded
            "no",  # confidential
            re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d$"),  # uploaded
            re.compile(r"^content [0-9a-f]{12}…$"),  # details
            "",  # client release: only versions of the shoal application
            "Delete",
        ]
    )
    ui.screenshot("applications")


@in_browser
def test_the_views_follow_changes_made_elsewhere_without_a_reload(ui: ConsoleUI) -> None:
    page = ui.page
    ui.log_in()
    rows = page.locator("#applications-table tr")
    expect(rows).to_have_count(1)  # the header: nothing uploaded yet
    admin = ui.console.admin()  # another administrator, through the API
    try:
        admin.post(
            "/api/v1/applications",
            params={"name": "Uploaded elsewhere", "version": "2.0"},
            content=b"x" * 1000,
            headers={"content-type": "application/octet-stream"},
        ).raise_for_status()
    finally:
        admin.close()
    # The page redraws its views every 5 s.
    expect(rows.filter(has_text="Uploaded elsewhere")).to_have_count(1, timeout=12_000)
    expect(page.locator("#page-error")).to_be_hidden()


@in_browser
def test_licence_overage_shows_a_warning_and_an_invalid_key_an_error(ui: ConsoleUI) -> None:
    console, page = ui.console, ui.page
    ui.expect_refusal(422, "/api/v1/license")
    # Three devices reach the console the way they do in production: through the link
    # of a P2P server in the Central Office, which needs a licence to be activated.
    admin = console.admin()
    try:
        topology = "office,parent,type,subnets\nCentral Office,,Default,127.0.0.0/8\n"
        topology += "Paris,Central Office,Default,10.1.0.0/24\n"
        admin.put(
            "/api/v1/topology", content=topology, headers={"content-type": "text/csv"}
        ).raise_for_status()
        admin.put("/api/v1/license", json={"key": licence_key(seats=10)}).raise_for_status()
        server_key = admin.get("/api/v1/servers/auth-key").json()["key"]
    finally:
        admin.close()
    with ConsoleLink(
        console.base_url,
        server_key,
        "srv-central",
        name="central",
        address="127.0.0.1",
        ca_certificate=console.cert_path,
    ) as link:
        assert link.register().activated
        link.report_clients(
            ReportedClient(f"dev-{n}", f"pc{n}", f"10.1.0.{10 + n}", "10.1.0.0/24", "0.1.0")
            for n in range(3)
        )

    ui.log_in()
    banner = page.locator("#licence-banner")
    expect(banner).to_have_class("ok")
    expect(banner).not_to_contain_text("OVERAGE")

    ui.open_tab("Licence")
    key_field = page.locator("#licence-form").get_by_label("Licence key")
    save = page.get_by_role("button", name="Save and activate")
    key_field.fill(licence_key(seats=1, vendor_key=SigningKey.generate()))
    save.click()
    expect(page.locator("#licence-error")).to_contain_text("signed by vendor key")
    expect(banner).to_have_class("ok")

    seats_over = page.locator("#licence-table tr").filter(has_text="seats over")
    for seats, over in ((1, "2 seats over"), (2, "1 seat over")):
        key_field.fill(licence_key(seats))
        save.click()
        expect(banner).to_have_class("warn")
        expect(banner).to_contain_text(f"OVERAGE: {over}.")
        expect(page.locator("#licence-error")).to_have_text("")
        expect(seats_over.locator("td")).to_have_text(["seats over", str(3 - seats)])


@in_browser
def test_topology_with_a_bad_cidr_names_the_line_and_the_field(ui: ConsoleUI) -> None:
    page = ui.page
    ui.expect_refusal(422, "/api/v1/topology")
    ui.log_in()
    ui.open_tab("Topology")
    csv_field = page.locator("#topology-form").get_by_label("Replace with CSV")
    upload = page.get_by_role("button", name="Upload topology")
    offices = page.locator("#offices-table")
    header = "office,parent,type,subnets\nCentral Office,,Default,10.0.0.0/24\n"

    csv_field.fill(
        header + "Paris,Central Office,Default,10.1.0.0/33\nLyon,Nowhere,Default,10.2.0.0/24\n"
    )
    upload.click()
    # Every problem once, on a line of its own.
    expect(page.locator("#topology-error")).to_have_text(
        re.compile(
            r"^line 3, subnets: '10\.1\.0\.0/33' is not a CIDR subnet[^\n]*\n"
            r"line 4, parent: unknown parent office 'Nowhere'$"
        )
    )
    expect(offices).not_to_contain_text("Paris")
    # Each refused line is shown beside its problem.
    refused = page.locator("#topology-problems tr")
    expect(refused.nth(1).locator("td")).to_have_text(
        ["3", "Paris,Central Office,Default,10.1.0.0/33", re.compile(r"^subnets: ")]
    )
    expect(refused.nth(2).locator("td")).to_have_text(
        ["4", "Lyon,Nowhere,Default,10.2.0.0/24", re.compile(r"^parent: unknown parent")]
    )

    csv_field.fill(header + "Paris,Central Office,Default,10.1.0.0/24\n")
    upload.click()
    expect(page.locator("#topology-error")).to_have_text("")
    expect(page.locator("#topology-problems")).to_be_hidden()
    paris = offices.locator("tr").filter(has_text="Paris")
    expect(paris.locator("td").nth(3)).to_have_text("10.1.0.0/24")


@in_browser
def test_logout_returns_to_the_login_form(ui: ConsoleUI) -> None:
    page = ui.page
    ui.log_in()
    expect(page.locator("#who")).to_contain_text("admin")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    expect(page.locator("#who")).to_have_text("")
    # The next person at this browser finds no password typed in, and no session.
    expect(page.locator("#login-form").get_by_label("Password")).to_have_value("")
    page.reload()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()


@in_browser
def test_logout_after_the_session_ended_returns_to_the_login_form(ui: ConsoleUI) -> None:
    page = ui.page
    ui.expect_refusal(401, "/api/v1/auth/logout")
    ui.log_in()
    expect(page.locator("#app")).to_be_visible()
    page.context.clear_cookies()
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()


AXE = Path(__file__).with_name("assets") / "axe.min.js"
SERIOUS = ("serious", "critical")


def accessibility_problems(page: Page) -> list[str]:
    """What axe-core (4.14.1, run in the page) finds serious or critical on it now."""
    # Evaluated through the debugging protocol: the page's CSP rightly refuses a script
    # tag that is not its own.
    page.evaluate(AXE.read_text() + "\n;void 0")
    found = page.evaluate("async () => (await axe.run(document)).violations")
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']} "
        f"at {[node['target'] for node in violation['nodes'][:3]]}"
        for violation in found
        if violation["impact"] in SERIOUS
    ]


def feed_a_site(console: ConsoleProcess, seats: int) -> tuple[dict, ConsoleLink]:
    """A P2P server in the Central Office with three devices in Paris, and a package
    assigned to Paris; answers the uploaded version and the server's open link."""
    admin = console.admin()
    try:
        topology = "office,parent,type,subnets\nCentral Office,,Default,127.0.0.0/8\n"
        topology += "Paris,Central Office,Default,10.1.0.0/24\n"
        topology += "Lyon,Central Office,Default,10.2.0.0/24\n"
        admin.put(
            "/api/v1/topology", content=topology, headers={"content-type": "text/csv"}
        ).raise_for_status()
        admin.put("/api/v1/license", json={"key": licence_key(seats)}).raise_for_status()
        server_key = admin.get("/api/v1/servers/auth-key").json()["key"]
        version = admin.post(
            "/api/v1/applications",
            params={"name": "Office Suite", "version": "24.2"},
            content=b"o" * 200_000,
            headers={"content-type": "application/octet-stream"},
        ).json()
    finally:
        admin.close()
    link = ConsoleLink(
        console.base_url,
        server_key,
        "srv-central",
        name="central",
        address="127.0.0.1",
        ca_certificate=console.cert_path,
    )
    assert link.register().activated
    return version, link


def report(link: ConsoleLink, content_id: str, held: list[int]) -> None:
    link.report_clients(
        ReportedClient(
            f"dev-{n}",
            f"paris-pc{n}",
            f"10.1.0.{10 + n}",
            "10.1.0.0/24",
            "0.1.0",
            ((content_id, done, done == 200_000),),
        )
        for n, done in enumerate(held)
    )


@in_browser
def test_the_dashboard_shows_progress_to_100_percent_wan_saved_and_the_overage(
    ui: ConsoleUI,
) -> None:
    page = ui.page
    version, link = feed_a_site(ui.console, seats=2)
    with link:
        report(link, version["content_id"], [200_000, 0, 0])
        ui.log_in()
        ui.open_tab("Assignments")
        form = page.locator("#assign-form")
        choice = form.get_by_label("Application version")
        choice.select_option(label="Office Suite 24.2 (195.3 KiB)")
        form.get_by_label("Target").select_option("office")
        form.locator("#assign-office").select_option("Paris")
        form.get_by_role("button", name="Assign").click()
        assigned = page.locator("#assignments-table tr").filter(has_text="Office Suite 24.2")
        expect(assigned).to_contain_text("office: Paris")
        expect(assigned).to_contain_text("1 / 3")

        ui.open_tab("Dashboard")
        expect(page.locator("#fig-seats")).to_have_text("3 / 2 (1 over)")
        expect(page.locator("#fig-seats .over")).to_have_css("color", "rgb(164, 0, 0)")
        expect(page.locator("#attention")).to_contain_text("1 seat over the 2 purchased")
        expect(page.locator("#fig-wan")).to_have_text("no downloads yet")
        progress = page.locator("#distributions-table tr").filter(has_text="Office Suite 24.2")
        expect(progress).to_contain_text("33.33%")
        ui.screenshot("dashboard-during")

        # The office swarms: the rendezvous point pulled it over the WAN once, the
        # others took it from peers. The page follows without a reload.
        report(link, version["content_id"], [200_000, 200_000, 200_000])
        link.report_stats([DownloadTotals(version["content_id"], "Paris", 400_000, 200_000)])
        expect(progress).to_contain_text("100%", timeout=12_000)
        expect(progress).to_contain_text("3 / 3")
        expect(page.locator("#fig-wan")).to_have_text(
            "66.7% (390.6 KiB from peers)", timeout=12_000
        )
        expect(page.locator("#fig-devices")).to_have_text("3 / 3")
        expect(page.locator("#fig-servers")).to_have_text("1 / 1")
        assert (
            page.evaluate("() => Chart.getChart('wan-chart').data.datasets[0].data.at(-1)")
            == 400_000
        )
        ui.screenshot("dashboard")
        assert accessibility_problems(page) == []
        page.set_viewport_size({"width": 800, "height": 900})
        expect(page.locator("#fig-wan")).to_be_visible()
        # The chart follows the new width once its resize observer fires.
        page.wait_for_function("() => document.documentElement.scrollWidth <= 800")
        wide = page.evaluate(
            "() => [...document.querySelectorAll('body *')]"
            ".filter((e) => e.getBoundingClientRect().right > 800 && e.offsetParent)"
            ".map((e) => e.tagName + '#' + e.id + '.' + e.className).slice(0, 5)"
        )
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 800, wide
        ui.screenshot("dashboard-800px")


@in_browser
def test_every_page_passes_the_accessibility_check_and_fits_800_px(ui: ConsoleUI) -> None:
    page = ui.page
    version, link = feed_a_site(ui.console, seats=10)  # every table has rows
    with link:
        report(link, version["content_id"], [200_000, 0])
        link.report_stats([DownloadTotals(version["content_id"], "Paris", 1000, 200_000)])
    admin = ui.console.admin()
    try:
        admin.post(
            "/api/v1/assignments", json={"version_id": version["id"], "target_kind": "everyone"}
        ).raise_for_status()
    finally:
        admin.close()
    ui.log_in()
    tabs = (
        "Dashboard",
        "Applications",
        "Assignments",
        "Devices",
        "Topology",
        "P2P servers",
        "P2P settings",
        "Licence",
        "Administrators",
    )
    for tab in tabs:
        ui.open_tab(tab)
        assert accessibility_problems(page) == [], tab
    page.set_viewport_size({"width": 800, "height": 900})
    page.wait_for_function("() => document.documentElement.scrollWidth <= 800")
    too_wide = (
        "() => [...document.querySelectorAll('body *')]"
        ".filter((e) => e.getBoundingClientRect().right > 800 && e.offsetParent)"
        ".map((e) => e.tagName + '#' + e.id + '.' + e.className).slice(0, 5)"
    )
    for tab in tabs:
        ui.open_tab(tab)
        # The chart follows the width once its resize observer fires: wait for it.
        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_function(f"() => ({too_wide})().length === 0", timeout=5000)
        assert page.evaluate(too_wide) == [], tab
        ui.screenshot(f"800px-{tab.lower().replace(' ', '-')}")


@in_browser
def test_a_server_is_set_up_from_the_ui(ui: ConsoleUI) -> None:
    page = ui.page
    ui.log_in()
    ui.open_tab("P2P servers")
    key = page.locator("#server-key")
    expect(key).to_have_text(re.compile(r"\S{20,}"))
    expect(page.locator("#server-command")).to_contain_text(key.inner_text())
    expect(page.locator("#server-command")).to_contain_text("shoal server run --console")
    # The server an administrator starts with that key appears, and its devices' bundle
    # downloads from the page.
    _version, link = feed_a_site(ui.console, seats=10)
    with link:
        row = page.locator("#servers-table tr").filter(has_text="central")
        expect(row).to_contain_text("online", timeout=12_000)
        with page.expect_download() as download:
            row.get_by_role("button", name="Enrollment bundle").click()
        bundle = download.value.path().read_text()
        assert '"enrollment_token"' in bundle and '"console_key"' in bundle


@in_browser
def test_the_console_key_is_rotated_from_the_ui_after_a_confirmation(ui: ConsoleUI) -> None:
    """The signing key is rotated on the P2P servers page: it asks first (a dismissed
    question rotates nothing), then shows the new fingerprint, the one it replaced and
    what devices must do."""
    page = ui.page
    ui.log_in()
    admin = ui.console.admin()
    try:
        before = admin.get("/api/v1/console-key").json()
        ui.open_tab("P2P servers")
        key_table = page.locator("#console-key-table")
        expect(key_table).to_contain_text(before["key_id"])
        rotate = page.get_by_role("button", name="Rotate the signing key")
        questions: list[str] = []

        def answer(accept: bool) -> Callable[[Dialog], None]:
            def handle(dialog: Dialog) -> None:
                questions.append(dialog.message)
                dialog.accept() if accept else dialog.dismiss()

            return handle

        page.once("dialog", answer(False))
        rotate.click()
        page.once("dialog", answer(True))
        rotate.click()
        result = page.locator("#key-rotated")
        expect(result).to_contain_text("New fingerprint")
        after = admin.get("/api/v1/console-key").json()
    finally:
        admin.close()
    # Once, not twice: the dismissed question left the key as it was.
    assert after["rotations"] == 1 and after["key_id"] != before["key_id"]
    assert len(questions) == 2 and "leaked" in questions[0] and "Devices follow it" in questions[0]
    expect(result).to_contain_text(
        f"New fingerprint: {after['key_id']} (it was {before['key_id']})"
    )
    expect(result).to_contain_text("What devices must do: nothing")
    expect(key_table).to_contain_text(after["key_id"])
    expect(key_table).not_to_contain_text(before["key_id"])
    expect(page.locator("#about")).to_contain_text(f"signing key {after['key_id']}")
    ui.screenshot("console_key_rotated")


@in_browser
def test_settings_administrators_tokens_and_retiring_are_done_in_the_ui(ui: ConsoleUI) -> None:
    page = ui.page
    _version, link = feed_a_site(ui.console, seats=10)
    with link:
        report(link, _version["content_id"], [0, 0])
    ui.log_in()
    page.on("dialog", lambda dialog: dialog.accept())  # every delete asks first

    ui.open_tab("P2P settings")
    form = page.locator("#settings-form")
    form.locator("[name=discovery]").fill("41500")
    form.locator("[name=alt_discovery]").fill("42500")
    form.locator("[name=alt_control]").fill("42501")
    form.locator("[name=alt_foreground_data]").fill("42502")
    form.locator("[name=alt_background_data]").fill("42503")
    page.get_by_role("button", name="Add an office").click()
    form.get_by_label("Office", exact=True).last.fill("Paris")
    form.get_by_label("Background kbit/s").last.fill("2000")
    form.get_by_role("button", name="Save settings").click()
    expect(page.locator("#settings-status")).to_have_text("saved")

    ui.open_tab("Administrators")
    admins = page.locator("#admin-form")
    admins.get_by_label("User name").fill("helpdesk")
    admins.get_by_label("Password (12 characters or more)").fill("a helpdesk password")
    admins.get_by_role("button", name="Add administrator").click()
    helpdesk = page.locator("#admins-table tr").filter(has_text="helpdesk")
    expect(helpdesk).to_have_count(1)
    page.locator("#token-form").get_by_label("Token name").fill("backup script")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#token-created")).to_contain_text("shoal_")
    expect(page.locator("#tokens-table")).to_contain_text("backup script")
    helpdesk.get_by_role("button", name="Remove helpdesk").click()
    expect(helpdesk).to_have_count(0)
    # Changing one's own password: a wrong current one is said, then the change is made.
    ui.expect_refusal(400, "/api/v1/auth/password")
    password = page.locator("#password-form")
    password.get_by_label("Current password").fill("not the password")
    password.get_by_label("New password (12 characters or more)").fill("a brand new password")
    password.get_by_role("button", name="Change password").click()
    expect(page.locator("#password-status")).to_have_text("current password is wrong")
    password.get_by_label("Current password").fill(ui.console.password or "")
    password.get_by_label("New password (12 characters or more)").fill("a brand new password")
    password.get_by_role("button", name="Change password").click()
    expect(page.locator("#password-status")).to_have_text("password changed")
    ui.console.password = "a brand new password"  # what console.admin() logs in with

    ui.open_tab("Devices")
    devices = page.locator("#devices-table tr")
    expect(devices).to_have_count(3)  # the header and two devices
    page.locator("#devices-filter").get_by_label("Search").fill("pc1")
    expect(devices).to_have_count(2)
    devices.filter(has_text="paris-pc1").get_by_role("button", name="Retire paris-pc1").click()
    expect(devices).to_have_count(1)

    admin = ui.console.admin()
    try:
        settings = admin.get("/api/v1/settings/p2p").json()
        assert settings["ports"]["discovery"] == 41500
        assert settings["alternative_ports"]["background_data"] == 42503
        assert settings["bandwidth"] == [
            {
                "office": "Paris",
                "foreground_kbps": None,
                "background_kbps": 2000,
                "max_concurrent_downloads": None,
            }
        ]
        assert [a["username"] for a in admin.get("/api/v1/admins").json()["items"]] == ["admin"]
        assert admin.get("/api/v1/devices").json()["total"] == 1
    finally:
        admin.close()


@in_browser
def test_install_results_show_a_failed_install_with_its_exit_code(ui: ConsoleUI) -> None:
    page = ui.page
    admin = ui.console.admin()
    try:
        admin.put(
            "/api/v1/topology",
            content="office,parent,type,subnets\nCentral Office,,Default,127.0.0.0/8\n"
            "Paris,Central Office,Default,10.1.0.0/24\n",
            headers={"content-type": "text/csv"},
        ).raise_for_status()
        admin.put("/api/v1/license", json={"key": licence_key(10)}).raise_for_status()
        link = {
            "X-Shoal-Server-Key": admin.get("/api/v1/servers/auth-key").json()["key"],
            "X-Shoal-Server-Id": "srv-ui",
            "X-Shoal-Version": __version__,
        }
        admin.post(
            "/api/v1/link/register",
            json={"server_id": "srv-ui", "name": "central", "address": "127.0.0.1"},
            headers=link,
        ).raise_for_status()
        version = admin.post(
            "/api/v1/applications",
            params={"name": "Tool", "version": "1.0", "install": '{"command": "x {file}"}'},
            content=b"x" * 1000,
            headers={"content-type": "application/octet-stream"},
        ).json()
        admin.post(
            "/api/v1/assignments", json={"version_id": version["id"], "target_kind": "everyone"}
        ).raise_for_status()
        failed = {
            "content_id": version["content_id"],
            "state": "failed",
            "attempts": 3,
            "exit_code": 100,
            "output_tail": "reading lists\nE: broken packages\n",
        }
        record = {
            "device_id": "d1",
            "hostname": "pc-1",
            "address": "10.1.0.7",
            "subnet": "10.1.0.0/24",
            "version": __version__,
            "installs": [failed],
        }
        pending = {**record, "device_id": "d2", "hostname": "pc-2", "address": "10.1.0.8"}
        admin.post(
            "/api/v1/link/clients",
            json={"clients": [record, {**pending, "installs": []}]},
            headers=link,
        ).raise_for_status()
    finally:
        admin.close()
    ui.log_in()
    attention = page.locator("#attention").filter(has_text="1 install failed on 1 device")
    expect(attention).to_be_visible()
    ui.open_tab("Assignments")
    row = page.locator("#installs-table tr").filter(has_text="pc-1")
    expect(row.locator("td")).to_have_text(
        ["Tool 1.0", "pc-1", "failed", "3", "100", "E: broken packages"]
    )
    # Failed only by default (what needs a person, and cheap on a large site).
    expect(page.locator("#installs-pager")).to_contain_text("of 1 ")
    expect(page.locator("#installs-table tr").filter(has_text="pc-2")).to_have_count(0)
    ui.screenshot("install-results-failed-only")
    page.get_by_label("failed only").uncheck()
    expect(page.locator("#installs-pager")).to_contain_text("of 2 ")
    expect(page.locator("#installs-table tr").filter(has_text="pc-2")).to_contain_text("pending")
    # Each assignment's own results, per device.
    assignment = page.locator("#assignments-table tr").filter(has_text="Tool 1.0")
    assignment.get_by_role("button", name="Install results of Tool 1.0 to everyone").click()
    expect(page.locator("#installs-of")).to_contain_text("Results of Tool 1.0 to everyone")
    expect(page.locator("#installs-pager")).to_contain_text("of 2 ")
    page.get_by_role("button", name="Show every assignment").click()
    expect(page.locator("#installs-of")).to_be_hidden()


@in_browser
def test_a_client_release_is_refused_naming_the_server_then_marked_in_the_ui(
    ui: ConsoleUI,
) -> None:
    page = ui.page
    _version, link = feed_a_site(ui.console, seats=10)  # a P2P server at this version
    admin = ui.console.admin()
    try:
        for release in ("9.9.0", __version__):
            admin.post(
                "/api/v1/applications",
                params={"name": "shoal", "version": release},
                content=release.encode() * 100,
                headers={"content-type": "application/octet-stream"},
            ).raise_for_status()
    finally:
        admin.close()
    with link:
        ui.log_in()
        page.on("dialog", lambda dialog: dialog.accept())  # marking asks first
        ui.expect_refusal(409, "/api/v1/client-release")
        ui.open_tab("Applications")
        newer = page.locator("#applications-table tr").filter(has_text="9.9.0")
        newer.get_by_role("button", name="Mark shoal 9.9.0 as the client release").click()
        expect(page.locator("#page-error")).to_contain_text(
            f"upgrade central ({__version__}) to 9.9.0 or later first"
        )
        current = page.locator("#applications-table tr").filter(has_text=__version__)
        current.get_by_role(
            "button", name=f"Mark shoal {__version__} as the client release"
        ).click()
        expect(current.get_by_role("button", name="Stop offering")).to_have_text("Stop offering")


@in_browser
def test_a_banned_peer_is_a_problem_and_the_office_view_shows_who_brings_the_package(
    ui: ConsoleUI,
) -> None:
    page = ui.page
    version, link = feed_a_site(ui.console, seats=10)
    content_id = version["content_id"]
    now = time.time()
    with link:
        report(link, content_id, [200_000, 100_000, 0])
        link.report_stats([DownloadTotals(content_id, "Paris", 100_000, 200_000)])
        # What the P2P server reports of its swarms: dev-2 banned in Paris an hour ago
        # by two devices; dev-0 holds the one rendezvous stripe of the package.
        ban = ReportedBan("Paris", "10.1.0.12", "dev-2", content_id, 2, now - 3600, now + 82800)
        assert link.report_swarm([ban], [ReportedHolders("Paris", content_id, ("dev-0",))])
        ui.log_in()
        since = datetime.fromtimestamp(now - 3600, UTC).strftime("%Y-%m-%d %H:%M")
        problem = page.locator("#attention li").filter(has_text="banned in Paris")
        expect(problem).to_have_text(
            f"Error: paris-pc2 (10.1.0.12) is banned in Paris since {since} UTC: 2 devices "
            "reported bad chunks of Office Suite 24.2 from it Open"
        )
        row = page.locator("#banned-table tr").filter(has_text="paris-pc2")
        expect(row.locator("td")).to_have_text(
            [
                "paris-pc2",
                "10.1.0.12",
                "Paris",
                "2 devices reported bad chunks of Office Suite 24.2",
                since,
                re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d$"),
                "central",
            ]
        )
        ui.screenshot("dashboard-banned-peer")

        # The problem's button opens the office tree; an office's name opens its view.
        problem.get_by_role("button", name="Open").click()
        expect(page.locator("#office-view-title")).to_have_text("Office Paris (Default)")
        page.get_by_role("button", name="Close the office view").click()
        expect(page.locator("#office-view")).to_be_hidden()
        page.get_by_role("button", name="Show the offices under Central Office").click()
        paris = page.locator("#office-tree li li").filter(has_text="Paris")
        expect(paris.first).to_contain_text(
            "3 devices · 33% from peers, 195.3 KiB over the WAN (1.00× the 195.3 KiB of packages)"  # noqa: RUF001 (the UI's multiplication sign)
        )
        page.get_by_role("button", name="Open the office view of Paris").click()
        expect(page.locator("#office-view-title")).to_have_text("Office Paris (Default)")
        download = page.locator("#office-downloads tr").filter(has_text="Office Suite 24.2")
        expect(download.locator("td")).to_have_text(
            ["Office Suite 24.2", "195.3 KiB", "97.7 KiB", "195.3 KiB", "1.00×", "1", "paris-pc0"]  # noqa: RUF001
        )
        expect(page.locator("#office-banned")).to_contain_text("paris-pc2")
        assert accessibility_problems(page) == []
        ui.screenshot("office-view")

        # The download ends and the ban is lifted: the next report says so, the page follows.
        assert link.report_swarm([], [])
        expect(download.locator("td").last).to_have_text("none (not downloading)", timeout=12_000)
        ui.open_tab("Dashboard")
        expect(page.locator("#banned")).to_be_hidden()
        expect(problem).to_have_count(0)
