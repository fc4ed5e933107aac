"""Writes a development `.env` with freshly generated keys, once.

Runs before Django is configured (settings read `.env`), so it imports no
Django settings.  An existing `.env` is never touched.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from cryptography.fernet import Fernet

ENV_FILE = Path(__file__).resolve().parent.parent / ".env"


def main() -> None:
    if ENV_FILE.exists():
        print(f"{ENV_FILE.name} exists; keeping it.")
        return
    ENV_FILE.write_text(
        "# Written by `make run` for local development. Do not use these keys in production.\n"
        "ORDERFLOW_ENV=dev\n"
        "DEBUG=true\n"
        f"SECRET_KEY={secrets.token_urlsafe(50)}\n"
        f"FIELD_ENCRYPTION_KEYS={Fernet.generate_key().decode()}\n",
        encoding="utf-8",
    )
    ENV_FILE.chmod(0o600)
    print(f"Wrote {ENV_FILE.name} with generated development keys.")


if __name__ == "__main__":
    main()
