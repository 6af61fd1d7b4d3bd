"""Deployment settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain.user import PERSON_ROLES
from infra.postgres import DATABASE_WAIT, WRITE_LOCK_TIMEOUT, WRITE_STATEMENT_TIMEOUT

# Longer than the write timeouts together: PostgreSQL's own timeouts end an ordinary wait
# first; this ends what it cannot see (a client and server stuck on each other).
COMMIT_TIMEOUT = 30.0

PRODUCTION, DEVELOPMENT = "production", "development"
# Many sealing rounds (every 2 s) and a long round's work: a busy sealer is not stalled.
STALL_AFTER = 60.0


@dataclass(frozen=True)
class Settings:
    """Where TrialLedger keeps its data and which database and key it uses.

    - ``database_url``: a PostgreSQL URL; ``None`` means "start the embedded server".
    - ``home``: the data directory (embedded PostgreSQL data, signing keys).
    - ``signing_key_file`` / ``signing_key_pem``: a signing key given by file or environment;
      when neither is set (nor a PKCS#11 key), a key is created in ``home/keys`` on first use.
    - ``pkcs11_module`` / ``pkcs11_token_label`` / ``pkcs11_key_label``: sign with the
      Ed25519 key of that label on that token of that PKCS#11 module (an HSM); the user PIN
      from ``pkcs11_pin`` or the first line of ``pkcs11_pin_file``.
    - ``field_kek_file``: the key-encryption key of identifying values
      (``TRIALLEDGER_FIELD_KEK_FILE``, 32 bytes, mode 0600); unset, created in ``home/keys``.
    - ``provisioned``: schemas and tables were made by their owner (``trialledger db grant``);
      the application, running as a role that owns nothing, must not try to create them.
    - ``write_lock_timeout`` / ``write_statement_timeout``: seconds a write waits for the
      events table's lock / one of its statements may run before PostgreSQL gives up on it
      (0: no limit).
    - ``commit_timeout``: seconds a server's group commit may take before its requests are
      answered 503 and its transaction is ended (releasing the lock); see
      :mod:`domain.group_commit`.
    - ``database_wait``: seconds a request waits at most for a database connection
      (``TRIALLEDGER_DATABASE_WAIT``, default 3): while the database is away, the first request
      is answered 503 after about this long, the next ones at once (see
      :mod:`application.database_away`).
    - ``environment``: ``production`` or ``development`` (``TRIALLEDGER_ENV``, default
      development: the demo and a developer's machine).
    - ``expose_docs``: serve ``/openapi.json`` to anyone (``TRIALLEDGER_EXPOSE_DOCS``; default:
      yes, except in production).
    - ``metrics_token``: ``/metrics`` answers only a request bearing this token
      (``TRIALLEDGER_METRICS_TOKEN``); without one, ``/metrics`` is open outside production
      and off (404) in production.
    - ``witnesses``: the witnesses that cosign checkpoints, each ``URL=VKEY`` (the witness's
      submission prefix and C2SP verifier key); ``witness_quorum`` how many must cosign a
      checkpoint before it is served (default: all of them).
    - ``sign_in_per_account`` / ``sign_in_per_address``: sign-in attempts allowed per minute
      for one account / from one network address, in each server process (0: no limit).
    - ``totp_roles``: roles whose holders must sign in (and sign) with a TOTP code.
    - ``store_pool_size`` / ``api_pool_size``: database connections a process holds at most
      for the event store (events, read tables) / for the API's own tables (sessions,
      idempotency keys, readiness, the study list, sealing), opened when needed
      (``TRIALLEDGER_STORE_POOL_SIZE``, default 4; ``TRIALLEDGER_API_POOL_SIZE``, default 2:
      the claims and answers of idempotency keys are stored by one thread). The background
      sealer's process holds at most :data:`application.sealing.SEALER_STORE_POOL_SIZE` and
      :data:`application.sealing.SEALER_API_POOL_SIZE` of them.
    - ``database_read_url``: a standby of the database (``DATABASE_READ_URL``), optional; the
      exports, audit pages and outcome tables are read there (see :mod:`infra.replica`), from
      a pool of at most ``read_pool_size`` connections (``TRIALLEDGER_READ_POOL_SIZE``,
      default 2); reads of the primary (every read without a standby) lend from a pool of
      the same size.
    - ``stall_after``: seconds the sealer (which also projects) may go without a round, or
      without progress while events wait, before ``/readyz`` says it has stalled
      (``TRIALLEDGER_STALL_AFTER``, default 60).
    """

    database_url: str | None
    home: Path
    signing_key_file: Path | None = None
    signing_key_pem: str | None = None
    key_name: str = "trialledger"
    pkcs11_module: str | None = None
    pkcs11_token_label: str | None = None
    pkcs11_key_label: str | None = None
    pkcs11_pin: str | None = None
    pkcs11_pin_file: Path | None = None
    # The key-encryption key of identifying values (infra.field_keys); None: home/keys.
    field_kek_file: Path | None = None
    provisioned: bool = False
    write_lock_timeout: float = WRITE_LOCK_TIMEOUT
    write_statement_timeout: float = WRITE_STATEMENT_TIMEOUT
    commit_timeout: float = COMMIT_TIMEOUT
    database_wait: float = DATABASE_WAIT
    environment: str = DEVELOPMENT
    expose_docs: bool | None = None
    metrics_token: str | None = None

    @property
    def production(self) -> bool:
        """True in production settings: nothing beyond the API is open by default."""
        return self.environment == PRODUCTION

    @property
    def docs_open(self) -> bool:
        """Whether ``/openapi.json`` is served to anyone."""
        return not self.production if self.expose_docs is None else self.expose_docs

    @property
    def metrics_open(self) -> bool:
        """Whether ``/metrics`` is served without a token (never once a token is set)."""
        return self.metrics_token is None and not self.production
    witnesses: tuple[str, ...] = ()
    witness_quorum: int | None = None

    @property
    def quorum(self) -> int:
        """How many witnesses must cosign a checkpoint (0 when none are configured)."""
        if not self.witnesses:
            return 0
        return len(self.witnesses) if self.witness_quorum is None else self.witness_quorum
    sign_in_per_account: int = 10
    sign_in_per_address: int = 100
    totp_roles: frozenset[str] = frozenset()
    store_pool_size: int = 4
    api_pool_size: int = 2
    database_read_url: str | None = None
    read_pool_size: int = 2
    stall_after: float = STALL_AFTER

    @property
    def keys_dir(self) -> Path:
        """Directory holding the private key (mode 0600) and every public key ever used."""
        return self.home / "keys"

    @property
    def pgdata(self) -> Path:
        """Data directory of the embedded PostgreSQL server."""
        return self.home / "pgdata"

    @classmethod
    def from_env(cls, database_url: str | None = None) -> Settings:
        """Settings from ``TRIALLEDGER_*`` variables and ``DATABASE_URL``."""
        env = os.environ
        key_file = env.get("TRIALLEDGER_SIGNING_KEY_FILE")
        return cls(
            database_url=database_url or env.get("DATABASE_URL") or None,
            home=Path(env.get("TRIALLEDGER_HOME", "~/.trialledger")).expanduser(),
            signing_key_file=Path(key_file).expanduser() if key_file else None,
            signing_key_pem=env.get("TRIALLEDGER_SIGNING_KEY") or None,
            key_name=env.get("TRIALLEDGER_KEY_NAME", "trialledger"),
            **_pkcs11(env, bool(key_file or env.get("TRIALLEDGER_SIGNING_KEY"))),
            field_kek_file=(Path(env["TRIALLEDGER_FIELD_KEK_FILE"]).expanduser()
                            if env.get("TRIALLEDGER_FIELD_KEK_FILE") else None),
            provisioned=env.get("TRIALLEDGER_PROVISIONED", "").lower() in ("1", "true", "yes"),
            write_lock_timeout=_seconds("TRIALLEDGER_WRITE_LOCK_TIMEOUT", WRITE_LOCK_TIMEOUT),
            write_statement_timeout=_seconds("TRIALLEDGER_WRITE_STATEMENT_TIMEOUT",
                                             WRITE_STATEMENT_TIMEOUT),
            commit_timeout=_seconds("TRIALLEDGER_COMMIT_TIMEOUT", COMMIT_TIMEOUT),
            database_wait=_wait("TRIALLEDGER_DATABASE_WAIT"),
            environment=_environment(),
            expose_docs=_flag("TRIALLEDGER_EXPOSE_DOCS"),
            metrics_token=env.get("TRIALLEDGER_METRICS_TOKEN") or None,
            **_witnesses(env.get("TRIALLEDGER_WITNESSES", ""),
                         env.get("TRIALLEDGER_WITNESS_QUORUM", "")),
            sign_in_per_account=_count("TRIALLEDGER_SIGN_IN_PER_ACCOUNT", 10),
            sign_in_per_address=_count("TRIALLEDGER_SIGN_IN_PER_ADDRESS", 100),
            totp_roles=_roles("TRIALLEDGER_TOTP_ROLES"),
            store_pool_size=_pool_size("TRIALLEDGER_STORE_POOL_SIZE", 4),
            api_pool_size=_pool_size("TRIALLEDGER_API_POOL_SIZE", 2),
            database_read_url=env.get("DATABASE_READ_URL") or None,
            read_pool_size=_pool_size("TRIALLEDGER_READ_POOL_SIZE", 2),
            stall_after=_wait("TRIALLEDGER_STALL_AFTER", STALL_AFTER),
        )


PKCS11_VARIABLES = ("TRIALLEDGER_PKCS11_MODULE", "TRIALLEDGER_PKCS11_TOKEN_LABEL",
                    "TRIALLEDGER_PKCS11_KEY_LABEL")


def _pkcs11(env: os._Environ[str], key_given: bool) -> dict[str, Any]:
    """The PKCS#11 key's settings: the module, token and key label go together, with a PIN,
    and exclude a key given by file or environment."""
    values = {name: env.get(name, "").strip() for name in PKCS11_VARIABLES}
    if not any(values.values()):
        return {}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ValueError(f"{', '.join(missing)} must be set with the other TRIALLEDGER_PKCS11_* "
                         "variables")
    if key_given:
        raise ValueError("TRIALLEDGER_PKCS11_* and TRIALLEDGER_SIGNING_KEY(_FILE) name two "
                         "signing keys: set one")
    pin, pin_file = env.get("TRIALLEDGER_PKCS11_PIN"), env.get("TRIALLEDGER_PKCS11_PIN_FILE")
    if bool(pin) == bool(pin_file):
        raise ValueError("set one of TRIALLEDGER_PKCS11_PIN and TRIALLEDGER_PKCS11_PIN_FILE")
    module, token, key = values.values()
    return {"pkcs11_module": module, "pkcs11_token_label": token, "pkcs11_key_label": key,
            "pkcs11_pin": pin or None,
            "pkcs11_pin_file": Path(pin_file).expanduser() if pin_file else None}


def _witnesses(listed: str, quorum: str) -> dict[str, Any]:
    """``witnesses`` and ``witness_quorum`` from TRIALLEDGER_WITNESSES (``URL=VKEY`` entries
    separated by spaces, commas or newlines) and TRIALLEDGER_WITNESS_QUORUM."""
    entries = tuple(e for e in listed.replace(",", " ").split() if e)
    for entry in entries:
        url, sep, vkey = entry.partition("=")
        if not sep or not url.startswith(("http://", "https://")) or vkey.count("+") < 2:
            raise ValueError("TRIALLEDGER_WITNESSES must list URL=VKEY entries (a witness's "
                             f"http(s) URL and its verifier key), not {entry!r}")
    if not quorum.strip():
        return {"witnesses": entries, "witness_quorum": None}
    if not quorum.strip().isdigit() or not 1 <= int(quorum) <= len(entries):
        raise ValueError(f"TRIALLEDGER_WITNESS_QUORUM must be between 1 and the number of "
                         f"witnesses ({len(entries)}), not {quorum!r}")
    return {"witnesses": entries, "witness_quorum": int(quorum)}


def _seconds(name: str, default: float) -> float:
    """A duration in seconds from the environment variable ``name``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be a number of seconds (0 or more), not {raw!r}")
    return value


def _wait(name: str, default: float = DATABASE_WAIT) -> float:
    """A wait in seconds (more than 0) from the environment variable ``name``."""
    value = _seconds(name, default)
    if value <= 0:
        raise ValueError(f"{name} must be a number of seconds more than 0, not {value:g}")
    return value


def _environment() -> str:
    raw = os.environ.get("TRIALLEDGER_ENV", "").strip().lower() or DEVELOPMENT
    if raw not in (PRODUCTION, DEVELOPMENT):
        raise ValueError(f"TRIALLEDGER_ENV must be {PRODUCTION} or {DEVELOPMENT}, not {raw!r}")
    return raw


def _flag(name: str) -> bool | None:
    """A yes/no environment variable; None when unset."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be yes or no, not {raw!r}")
def _count(name: str, default: int) -> int:
    """A whole number (0 or more) from the environment variable ``name``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ValueError(f"{name} must be a whole number (0 or more), not {raw!r}")
    return int(raw)


def _pool_size(name: str, default: int) -> int:
    """A number of connections (1 or more) from the environment variable ``name``."""
    size = _count(name, default)
    if size < 1:
        raise ValueError(f"{name} must be a number of connections (1 or more), not {size}")
    return size


def _roles(name: str) -> frozenset[str]:
    """Roles named, comma-separated, in the environment variable ``name``."""
    roles = frozenset(r.strip() for r in os.environ.get(name, "").split(",") if r.strip())
    unknown = sorted(roles - set(PERSON_ROLES))
    if unknown:
        raise ValueError(f"{name} names no role {', '.join(unknown)} (roles: "
                         f"{', '.join(PERSON_ROLES)})")
    return roles
