"""Dark mode (issue 22, Required 7): the page follows ``prefers-color-scheme``.

Headless Chromium with the media feature emulated through the DevTools protocol
(``Emulation.setEmulatedMedia``): the body's computed background is dark, its text
light, and the charts' paper is drawn dark too; without the emulation (light) the
body stays white. See tests/ui/test_ui_browser.py for the browser set-up.
"""

from __future__ import annotations

import re

from test_ui_browser import (  # noqa: F401 - browser_binaries, driver and served are fixtures
    TOKENS,
    WAIT,
    browser_binaries,
    drawn_traces,
    driver,
    no_console_errors,
    served,
    wait_rendered,
)


def luminance(css: str) -> float:
    """Relative brightness (0 black .. 1 white) of a computed ``rgb(...)`` colour."""
    red, green, blue = (int(v) for v in re.findall(r"\d+", css)[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


def body_colors(browser) -> tuple[str, str]:
    return tuple(browser.execute_script(
        "const s = getComputedStyle(document.body); return [s.backgroundColor, s.color];"))


def set_scheme(browser, scheme: str) -> None:
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "media": "", "features": [{"name": "prefers-color-scheme", "value": scheme}]})


def test_dark_mode_follows_the_system(served, driver):  # noqa: F811 - the fixtures
    from selenium.webdriver.support.ui import WebDriverWait

    base, ids = served
    set_scheme(driver, "light")
    driver.get(base + "/?token=" + TOKENS[base])
    wait_rendered(driver)
    background, text = body_colors(driver)
    assert luminance(background) > 0.9 and luminance(text) < 0.3, (background, text)

    set_scheme(driver, "dark")
    driver.get(base + "/")
    wait_rendered(driver)
    background, text = body_colors(driver)
    assert luminance(background) < 0.15 and luminance(text) > 0.7, (background, text)
    assert driver.execute_script(
        "return matchMedia('(prefers-color-scheme: dark)').matches") is True

    # the run page: its charts are drawn on the dark background too
    driver.get(f"{base}/runs/{ids['best']}")
    wait_rendered(driver)
    WebDriverWait(driver, WAIT).until(lambda b: drawn_traces(b, "#charts") > 0)
    papers = driver.execute_script(
        "return [...document.querySelectorAll('.main-svg rect.bg, .main-svg')]"
        ".map(e => e.style.fill || e.style.background || getComputedStyle(e).fill)"
        ".filter(c => c && c.startsWith('rgb'))")
    assert papers and all(luminance(c) < 0.15 for c in papers), papers
    no_console_errors(driver)
