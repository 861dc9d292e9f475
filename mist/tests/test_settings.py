"""Settings parsing: safe development defaults, hard failures for unsafe production settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]


def _run_settings(env: dict[str, str], code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {
        "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "MIST_STORAGE_ROOT", "MIST_CACHE_ROOT",
        "CSRF_TRUSTED_ORIGINS", "MIST_VAR_DIR", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
        "SECURE_HSTS_SECONDS", "DISCORD_WEBHOOK_URL",
    }}
    clean.update({"DJANGO_SETTINGS_MODULE": "mist.settings", "MIST_VAR_DIR": str(tmp_path / "var")})
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings as s; " + code],
        cwd=tmp_path, env={**clean, "PYTHONPATH": str(BASE_DIR)}, capture_output=True, text=True, timeout=60,
    )


def test_development_defaults_generate_and_keep_a_secret_key(tmp_path: Path) -> None:
    first = _run_settings({"DEBUG": "true"}, "print(s.SECRET_KEY); print(s.DATABASES['default']['NAME'])", tmp_path)
    assert first.returncode == 0, first.stderr
    key, db_name = first.stdout.split()
    assert len(key) > 40
    assert db_name == str(tmp_path / "var" / "mist.sqlite3")
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o777 == 0o600
    again = _run_settings({"DEBUG": "true"}, "print(s.SECRET_KEY)", tmp_path)
    assert again.stdout.strip() == key


def test_production_requires_secret_key(tmp_path: Path) -> None:
    result = _run_settings({"ALLOWED_HOSTS": "store.example.org"}, "print(s.DEBUG)", tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY is required in production" in result.stderr


def test_production_requires_allowed_hosts(tmp_path: Path) -> None:
    result = _run_settings({"SECRET_KEY": "x" * 60}, "print(s.DEBUG)", tmp_path)
    assert result.returncode != 0
    assert "ALLOWED_HOSTS is required in production" in result.stderr


def test_environment_variables_are_parsed(tmp_path: Path) -> None:
    env = {
        "SECRET_KEY": "y" * 60,
        "ALLOWED_HOSTS": "a.example,b.example",
        "CSRF_TRUSTED_ORIGINS": "https://a.example",
        "DATABASE_URL": "postgres://mist:pw@db.internal:5433/mistdb",
        "MIST_STORAGE_ROOT": "/mnt/nas/mist",
        "MIST_CACHE_ROOT": "/var/cache/mist",
        "DISCORD_WEBHOOK_URL": "http://127.0.0.1:1/hook",
    }
    code = (
        "d=s.DATABASES['default']; print(s.ALLOWED_HOSTS, s.CSRF_TRUSTED_ORIGINS, d['ENGINE'], d['HOST'], "
        "d['PORT'], d['NAME'], s.MIST_STORAGE_ROOT, s.MIST_CACHE_ROOT, s.DISCORD_WEBHOOK_URL, s.DEBUG, "
        "s.SESSION_COOKIE_SECURE, s.PASSWORD_HASHERS[0], s.Q_CLUSTER['retry'] > s.Q_CLUSTER['timeout'])"
    )
    result = _run_settings(env, code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "['a.example',", "'b.example']", "['https://a.example']", "django.db.backends.postgresql",
        "db.internal", "5433", "mistdb", "/mnt/nas/mist", "/var/cache/mist", "http://127.0.0.1:1/hook", "False",
        "True", "django.contrib.auth.hashers.Argon2PasswordHasher", "True",
    ]


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ALLOWED_HOSTS"])
def test_check_deploy_fails_clearly_without(missing: str, tmp_path: Path) -> None:
    env = {"SECRET_KEY": "z" * 60, "ALLOWED_HOSTS": "store.example.org"}
    del env[missing]
    clean = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"}}
    clean.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), "check", "--deploy"],
        env={**clean, **env, "MIST_VAR_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert f"{missing} is required in production" in result.stderr


def test_check_deploy_is_clean_with_production_settings(tmp_path: Path) -> None:
    env = {
        "SECRET_KEY": "k8Vw2p9-Rq4sT7uX1yZ3aB6cD0eF5gH8iJ2kL4mN6oP9qR1sT3uV5wX7yZ0aB2cD4eF",
        "ALLOWED_HOSTS": "store.example.org",
        "CSRF_TRUSTED_ORIGINS": "https://store.example.org",
        "SECURE_HSTS_SECONDS": "31536000",
        "SESSION_COOKIE_SECURE": "true",
        "CSRF_COOKIE_SECURE": "true",
    }
    clean = {k: v for k, v in os.environ.items() if k not in {"DEBUG", *env}}
    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), "check", "--deploy", "--fail-level", "WARNING"],
        env={**clean, **env, "MIST_VAR_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
