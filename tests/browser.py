"""What every real-browser script here shares: how Chromium is launched, how a tab is found.

Used by tests/test_browser.py, bench/bench_app.py and bench/screenshots.py.
"""

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own download cannot work here
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# Streamlit keeps one stTabPanel per tab; the open one is labelled by the selected tab.
OPEN_PANEL_JS = """name => {
  const tab = Array.from(document.querySelectorAll('[role="tab"]'))
      .find(t => t.innerText.trim() === name);
  if (!tab || tab.getAttribute('aria-selected') !== 'true') return null;
  return Array.from(document.querySelectorAll('[data-testid="stTabPanel"]'))
      .find(p => p.getAttribute('aria-labelledby') === tab.id) || null;
}"""
