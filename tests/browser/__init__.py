"""Browser tests: a real headless Chromium drives the admin against the live server, as an operator would."""
