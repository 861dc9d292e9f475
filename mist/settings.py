"""Mist settings: every knob comes from the environment (django-environ), see `.env.example`.

Development (DEBUG=true) gets safe local defaults: SQLite under var/, a generated secret key kept
in var/secret_key. Production (DEBUG unset or false) refuses to start without SECRET_KEY and
ALLOWED_HOSTS, so a forgotten variable is a loud failure rather than an insecure server.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from mistcore.platforms import PLATFORMS

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("MIST_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)


def _secret_key() -> str:
    key = env.str("SECRET_KEY", default="")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is required in production (DEBUG is off). Set SECRET_KEY in the environment "
            "or .env, e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'."
        )
    # Development: generate once and keep it, so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "ALLOWED_HOSTS is required in production (DEBUG is off), e.g. ALLOWED_HOSTS=store.example.org"
    )
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- Mist's own settings ---------------------------------------------------------------------
MIST_STORAGE_ROOT = Path(env.str("MIST_STORAGE_ROOT", default=str(VAR_DIR / "storage")))
MIST_CACHE_ROOT = Path(env.str("MIST_CACHE_ROOT", default=str(VAR_DIR / "cache")))
MIST_CACHE_BUDGET_BYTES = env.int("MIST_CACHE_BUDGET_BYTES", default=50 * 1024**3)
# Object storage (builds/objectstore.py): "filesystem" keeps everything under MIST_STORAGE_ROOT; "s3" also writes
# every immutable artifact (base archives, manifests, delta/jump/indirect bundles, full archives) to an
# S3-compatible bucket, rebuilds what the local disk lacks from it, and answers downloads with presigned URLs.
MIST_STORAGE = env.str("MIST_STORAGE", default="filesystem")
if MIST_STORAGE not in ("filesystem", "s3"):
    raise ImproperlyConfigured(f"MIST_STORAGE={MIST_STORAGE!r}: must be filesystem or s3")
MIST_S3_ENDPOINT_URL = env.str("MIST_S3_ENDPOINT_URL", default="")  # empty: AWS itself
# Where friends reach the bucket, if not at MIST_S3_ENDPOINT_URL (e.g. an R2 public hostname): presigned URLs use it.
MIST_S3_PUBLIC_ENDPOINT_URL = env.str("MIST_S3_PUBLIC_ENDPOINT_URL", default="")
MIST_S3_BUCKET = env.str("MIST_S3_BUCKET", default="")
MIST_S3_REGION = env.str("MIST_S3_REGION", default="us-east-1")
MIST_S3_ACCESS_KEY_ID = env.str("MIST_S3_ACCESS_KEY_ID", default="")
MIST_S3_SECRET_ACCESS_KEY = env.str("MIST_S3_SECRET_ACCESS_KEY", default="")
MIST_S3_PREFIX = env.str("MIST_S3_PREFIX", default="mist/")
MIST_S3_PRESIGN_SECONDS = env.int("MIST_S3_PRESIGN_SECONDS", default=900)
# Serve downloads through this server (read from the bucket) instead of redirecting: for buckets friends cannot reach.
MIST_S3_PROXY = env.bool("MIST_S3_PROXY", default=False)
MIST_S3_PART_BYTES = env.int("MIST_S3_PART_BYTES", default=64 * 1024**2)
# The storage disk as a bounded cache of the bucket: local copies of base archives and delta bundles (and their
# folders) beyond this many bytes are dropped, oldest first, once the bucket's copy is verified (0: keep all).
MIST_S3_LOCAL_BYTES = env.int("MIST_S3_LOCAL_BYTES", default=0)
if MIST_STORAGE == "s3" and not MIST_S3_BUCKET:
    raise ImproperlyConfigured("MIST_STORAGE=s3 needs MIST_S3_BUCKET (and the endpoint and keys, see docs/RUNBOOK.md)")
# The platform of a push or a request that names none, and of everything pushed before platforms existed.
MIST_DEFAULT_PLATFORM = env.str("MIST_DEFAULT_PLATFORM", default="windows")
if MIST_DEFAULT_PLATFORM not in PLATFORMS:
    raise ImproperlyConfigured(f"MIST_DEFAULT_PLATFORM={MIST_DEFAULT_PLATFORM!r}: must be one of {', '.join(PLATFORMS)}")
# A spent refresh token presented again revokes its whole family (stolen-token defence), except within this
# many seconds of being spent: that is two processes of one patcher racing, and the reuse only gets a 401.
MIST_REFRESH_REUSE_GRACE_SECONDS = env.int("MIST_REFRESH_REUSE_GRACE_SECONDS", default=10)
# Content-Security-Policy of every page (deploy/nginx sends the same one on what it serves itself).
MIST_CSP = env.str(
    "MIST_CSP",
    default="default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'",
)
# The largest build a push accepts (expanded size), and the free space a push must leave on the storage disk.
MIST_MAX_BUILD_BYTES = env.int("MIST_MAX_BUILD_BYTES", default=256 * 1024**3)
MIST_MIN_FREE_BYTES = env.int("MIST_MIN_FREE_BYTES", default=1024**3)
MIST_HDIFF_MAX_BYTES = env.int("MIST_HDIFF_MAX_BYTES", default=256 * 1024**2)
MIST_ACCEL_REDIRECT = env.bool("MIST_ACCEL_REDIRECT", default=False)
MIST_ACCEL_STORAGE_PREFIX = env.str("MIST_ACCEL_STORAGE_PREFIX", default="/_protected/storage/")
MIST_ACCEL_CACHE_PREFIX = env.str("MIST_ACCEL_CACHE_PREFIX", default="/_protected/cache/")
MIST_SIGNED_URL_TTL = env.int("MIST_SIGNED_URL_TTL", default=6 * 3600)
MIST_MAX_SIGNATURE_UPLOAD_BYTES = env.int("MIST_MAX_SIGNATURE_UPLOAD_BYTES", default=512 * 1024**2)
MIST_JOB_MAX_ATTEMPTS = env.int("MIST_JOB_MAX_ATTEMPTS", default=3)
# A running job whose worker sent no heartbeat for this long is considered dead and re-queued.
MIST_JOB_STALE_SECONDS = env.int("MIST_JOB_STALE_SECONDS", default=90)
MIST_PUBLIC_URL = env.str("MIST_PUBLIC_URL", default="")
DISCORD_WEBHOOK_URL = env.str("DISCORD_WEBHOOK_URL", default="")
# Brute-force protection (accounts.throttling)
# Sign-in throttling (accounts/throttling.py has the rule): per (username, address) and per address within the
# window; per username from all addresses within the longer username window, for addresses that failed.
MIST_LOGIN_FAILURES_PER_USERNAME_ADDRESS = env.int("MIST_LOGIN_FAILURES_PER_USERNAME_ADDRESS", default=5)
MIST_LOGIN_FAILURES_PER_ADDRESS = env.int("MIST_LOGIN_FAILURES_PER_ADDRESS", default=20)
MIST_LOGIN_FAILURE_WINDOW_SECONDS = env.int("MIST_LOGIN_FAILURE_WINDOW_SECONDS", default=900)
MIST_LOGIN_FAILURES_PER_USERNAME = env.int("MIST_LOGIN_FAILURES_PER_USERNAME", default=50)
MIST_LOGIN_USERNAME_WINDOW_SECONDS = env.int("MIST_LOGIN_USERNAME_WINDOW_SECONDS", default=3600)
# Reverse proxies in front of gunicorn that append to X-Forwarded-For (nginx: 1); 0 = use REMOTE_ADDR.
MIST_TRUSTED_PROXIES = env.int("MIST_TRUSTED_PROXIES", default=0)
MIST_PAIRING_CODE_MINUTES = env.int("MIST_PAIRING_CODE_MINUTES", default=10)
MIST_STEAM_TIMEOUT = env.float("MIST_STEAM_TIMEOUT", default=5.0)
STEAM_APPDETAILS_URL = env.str(
    "STEAM_APPDETAILS_URL", default="https://store.steampowered.com/api/appdetails"
)

# --- Django ------------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our static files: no script from outside the server
    "django_q",
    "accounts",
    "catalog",
    "builds",
    "deltas",
    "downloads",
    "mist",
]

MIDDLEWARE = [
    "mist.observability.RequestIdMiddleware",
    "mist.middleware.RejectNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "mist.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mist.urls"
WSGI_APPLICATION = "mist.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_SQLITE_DEFAULT = f"sqlite:///{VAR_DIR / 'mist.sqlite3'}"
DATABASES = {"default": env.db("DATABASE_URL", default=_SQLITE_DEFAULT)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded demo: the web process and the worker share one file (see PITFALLS.md).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    # Long worker jobs can outlive a connection: check it before reuse.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# A shared cache: django-q2's cluster heartbeat must be readable from the web process.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "mist_cache",
    }
}

AUTH_USER_MODEL = "accounts.User"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "store:library"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
MEDIA_ROOT = MIST_STORAGE_ROOT / "media"
MEDIA_URL = "media/"

# Upload API chunks are streamed to disk by our own view; keep Django's in-memory limit small.
DATA_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024**2
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024**2

# --- Security (production) ---------------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = env.bool("USE_X_FORWARDED_HOST", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS = env.list(
    "SILENCED_SYSTEM_CHECKS",
    # TLS ends at the border proxy (see deploy/): HTTPS redirects and HSTS subdomains are its job.
    default=["security.W008", "security.W005", "security.W021"],
)

# --- API ---------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.MistJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "mist.api.JSONParser",  # nesting past the recursion limit is a 400
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "mist.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=30)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "AUTH_HEADER_TYPES": ("Bearer",),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Mist API",
    "DESCRIPTION": "The API the Mist patcher and admin tools speak. Versioned under /api/v1/.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema maps every endpoint: strangers reach only login, health and static files (threat model).
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Worker (django-q2, ORM broker on the same database) ---------------------------------------
# timeout < retry so a running task is never handed out twice while alive; our own Job rows
# (builds.models.Job) make every task idempotent and count attempts, since django-q2 re-delivers
# killed tasks forever (see PITFALLS.md).
Q_CLUSTER = {
    "name": "mist",
    "orm": "default",
    "workers": env.int("MIST_WORKERS", default=2),
    "timeout": env.int("MIST_TASK_TIMEOUT", default=3600),
    "retry": env.int("MIST_TASK_RETRY", default=3900),
    "queue_limit": env.int("MIST_WORKERS", default=2),
    "bulk": 1,
    "max_attempts": env.int("MIST_JOB_MAX_ATTEMPTS", default=3),
    "ack_failures": True,
    "catch_up": False,
    "poll": env.float("MIST_QUEUE_POLL", default=0.5),
    "save_limit": 1000,
    "label": "Worker tasks",
}

# --- Logging: one JSON line per event on stdout, with the request id ---------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "mist.observability.RequestIdFilter"}},
    "formatters": {"json": {"()": "mist.observability.JsonFormatter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "json",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "django-q": {"level": "WARNING"},
    },
}
