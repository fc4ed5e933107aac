"""Deployment: `check --deploy` with the production variables, the dev .env, the hashed dependency locks."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from orderflow import devenv
from tests.test_settings import ROOT, clean_env


def readme_production_environment() -> dict[str, str]:
    """The environment the README's Production section tells an operator to set, with keys generated for the
    placeholders and the database this suite can reach (the check connects to nothing else)."""
    section = (ROOT / "README.md").read_text().split("## Production", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's Production section has no environment block"
    values = {}
    for line in block.group(1).splitlines():
        name, _, value = line.split("#", 1)[0].strip().partition("=")
        if name:
            values[name] = value.strip()
    generated = {"SECRET_KEY": secrets.token_urlsafe(50),
                 "FIELD_ENCRYPTION_KEYS": f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}"}
    assert set(generated) <= set(values) and values["ORDERFLOW_ENV"] == "production"
    return {**values, **generated, "DATABASE_URL": "sqlite:////tmp/orderflow-deploy-check.sqlite3"}


PRODUCTION = readme_production_environment()


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=clean_env(**env),
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_with_exactly_the_readmes_production_variables() -> None:
    """Issue 18, finding 5: the README promised a clean check with variables that did not give one."""
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_names_what_production_still_lacks() -> None:
    env = {k: v for k, v in PRODUCTION.items() if k not in {"ALLOWED_HOSTS", "SECURE_HSTS_PRELOAD"}}
    result = manage("check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode != 0
    assert "security.W020" in result.stderr and "security.W021" in result.stderr  # empty ALLOWED_HOSTS, no preload


def test_check_refuses_a_bad_encryption_key_without_echoing_it() -> None:
    bad = "this-is-not-a-fernet-key"
    result = manage("check", **{**PRODUCTION, "FIELD_ENCRYPTION_KEYS": f"{Fernet.generate_key().decode()},{bad}"})
    assert result.returncode != 0
    assert "orderflow.E003" in result.stderr and "entry #2" in result.stderr
    assert bad not in result.stdout + result.stderr


def test_production_refuses_the_builtin_keys_at_start_up() -> None:
    result = manage("check", **{**PRODUCTION, "SECRET_KEY": devenv.TEST_SECRET_KEY})
    assert result.returncode != 0 and "SECRET_KEY is the repository's built-in test key" in result.stderr
    result = manage("check", **{**PRODUCTION, "FIELD_ENCRYPTION_KEYS": devenv.TEST_FIELD_ENCRYPTION_KEY})
    assert result.returncode != 0 and "FIELD_ENCRYPTION_KEYS entry #1 is the repository's built-in" in result.stderr
    assert devenv.TEST_FIELD_ENCRYPTION_KEY not in result.stderr


# --- the dev .env that `make run` writes ---

@pytest.fixture
def env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / ".env"
    monkeypatch.setattr(devenv, "ENV_FILE", path)
    return path


def assigned(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")


def test_make_run_writes_a_dev_env_with_fresh_keys(env_file: Path) -> None:
    devenv.main()
    values = assigned(env_file)
    assert values["ORDERFLOW_ENV"] == "dev" and len(values["SECRET_KEY"]) >= 50
    Fernet(values["FIELD_ENCRYPTION_KEYS"])  # a valid key
    assert values["FIELD_ENCRYPTION_KEYS"] != devenv.TEST_FIELD_ENCRYPTION_KEY
    assert env_file.stat().st_mode & 0o077 == 0
    before = env_file.read_text()
    devenv.main()
    assert env_file.read_text() == before  # never replaced


def test_a_dev_env_without_keys_gets_them_added(env_file: Path) -> None:
    env_file.write_text("ORDERFLOW_ENV=dev\nDEBUG=true\nSECRET_KEY=kept-as-it-is")
    devenv.main()
    values = assigned(env_file)
    assert values["SECRET_KEY"] == "kept-as-it-is" and values["DEBUG"] == "true"
    Fernet(values["FIELD_ENCRYPTION_KEYS"])


def test_a_non_dev_env_is_never_given_dev_keys(env_file: Path) -> None:
    env_file.write_text("ORDERFLOW_ENV=production\n")
    devenv.main()
    assert env_file.read_text() == "ORDERFLOW_ENV=production\n"


# --- reproducible installs ---

def pins(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile --generate-hashes file."""
    text = lock.read_text().replace("\\\n", " ")
    found = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        requirement, *options = line.split(" --hash=")
        name, _sep, version = requirement.strip().partition("==")
        found[canonicalize_name(name)] = (version, [o.strip() for o in options])
    return found


def ranges(path: Path) -> list[Requirement]:
    found = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found += ranges(path.parent / line[3:].strip())
        elif line:
            found.append(Requirement(line))
    return found


@pytest.mark.parametrize("source, lock", [("requirements.txt", "requirements.lock"),
                                          ("requirements-test.txt", "requirements-test.lock")])
def test_lock_pins_every_requirement_within_its_range_with_hashes(source: str, lock: str) -> None:
    locked = pins(ROOT / lock)
    assert locked, f"{lock} is empty"
    for name, (version, hashes) in locked.items():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), f"{name} is not pinned with =="
        assert hashes and all(h.startswith("sha256:") for h in hashes), f"{name} has no sha256 hashes"
    for requirement in ranges(ROOT / source):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in {lock}: run `make lock`"
        assert requirement.specifier.contains(locked[name][0], prereleases=True), (
            f"{lock} pins {name}=={locked[name][0]}, outside {requirement.specifier}: run `make lock`")
        for needed in extra_requirements(requirement):  # psycopg[binary] -> psycopg-binary
            assert canonicalize_name(needed.name) in locked, f"{requirement} needs {needed.name}, not in {lock}"


def extra_requirements(requirement: Requirement) -> list[Requirement]:
    """What the extras of ``requirement`` add, read from the installed distribution's metadata."""
    found = []
    for extra in requirement.extras:
        for line in metadata.requires(requirement.name) or []:
            needed = Requirement(line)
            if needed.marker and needed.marker.evaluate({"extra": extra}) and not needed.marker.evaluate({"extra": ""}):
                found.append(needed)
    return found


def test_runtime_and_test_locks_agree() -> None:
    runtime, test = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-test.lock")
    assert {name: pin[0] for name, pin in runtime.items()} == {name: test[name][0] for name in runtime}


def test_installs_go_through_the_hashed_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    installs = [line.strip() for line in makefile.splitlines() if "pip install" in line and "-r " in line]
    assert installs and all("--require-hashes" in line and ".lock" in line for line in installs), installs
