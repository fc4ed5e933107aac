"""Development keys: `make run` writes `.env` with freshly generated ones, once.

Runs before Django is configured (settings read `.env`), so it imports no
Django settings.  An existing `.env` is kept; only a development one
(``ORDERFLOW_ENV=dev``) that lacks a key gets a generated one appended.

This module also names the repository's public keys: the fallbacks that only
``ORDERFLOW_ENV=test`` may use.  Settings refuse them everywhere else.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from cryptography.fernet import Fernet

ENV_FILE = Path(__file__).resolve().parent.parent / ".env"

#: Built-in keys for ORDERFLOW_ENV=test only. They are in a public repository, so they protect nothing.
TEST_SECRET_KEY = "insecure-dev-key-do-not-use-in-production"
TEST_FIELD_ENCRYPTION_KEY = "ZGV2LW9ubHkta2V5LWZvci1vcmRlcmZsb3ctdGVzdHM="


def generated_keys() -> dict[str, str]:
    return {"SECRET_KEY": secrets.token_urlsafe(50), "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode()}


def _assigned(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip().strip("'\"")
    return values


def main() -> None:
    keys = generated_keys()
    if not ENV_FILE.exists():
        ENV_FILE.write_text(
            "# Written by `make run` for local development. Do not use these keys in production.\n"
            "ORDERFLOW_ENV=dev\n"
            "DEBUG=true\n" + "".join(f"{name}={value}\n" for name, value in keys.items()),
            encoding="utf-8",
        )
        ENV_FILE.chmod(0o600)
        print(f"Wrote {ENV_FILE.name} with generated development keys.")
        return
    text = ENV_FILE.read_text(encoding="utf-8")
    assigned = _assigned(text)
    missing = [name for name in keys if not assigned.get(name)]
    if not missing or assigned.get("ORDERFLOW_ENV") != "dev":
        print(f"{ENV_FILE.name} exists; keeping it.")
        return
    # A FIELD_ENCRYPTION_KEYS added here cannot read secrets stored with another key: enter those again.
    addition = "".join(f"{name}={keys[name]}\n" for name in missing)
    ENV_FILE.write_text(text + ("" if text.endswith("\n") or not text else "\n") + addition, encoding="utf-8")
    print(f"{ENV_FILE.name} exists; added generated development {', '.join(missing)}.")


if __name__ == "__main__":
    main()
