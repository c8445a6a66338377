"""Users of the panel and the staff console: profile rules and password hashing.

Passwords are hashed with scrypt (``timbra_shared.passwords``, shared with the portal's customers) (memory-hard, stdlib ``hashlib.scrypt``) at one of OWASP's
equivalent minimum costs: N=2^15, r=8, p=3 (32 MiB per hash; the same work as N=2^17, p=1 with a
quarter of the memory, which matters on small shared machines). The parameters travel inside the stored hash, so the cost
can be raised later and old hashes still verify (and are re-hashed at the next login).
"""

import math
import re
from datetime import datetime, timedelta
from typing import Any

from timbra_shared.errors import Problem
from timbra_shared.passwords import DUMMY_HASH, SCRYPT_DKLEN, SCRYPT_N, SCRYPT_P, SCRYPT_R, hash_password, needs_rehash, verify_password  # noqa: F401 - re-exported

ISSUER_ROLES = ("owner",)
STAFF_ROLES = ("operator", "billing")
ROLES = ISSUER_ROLES + STAFF_ROLES

MIN_PASSWORD = 10
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{2,63}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
INITIALS = re.compile(r"^[A-ZÑ]{1,5}$")


#: failed logins of one username within LOGIN_WINDOW that lock it for LOGIN_LOCK (OWASP's
#: "account lockout" with an automatic unlock, so an attacker can slow a user down but not shut them out)
LOGIN_MAX_FAILURES = 5
LOGIN_WINDOW = timedelta(minutes=15)
LOGIN_LOCK = timedelta(minutes=15)


def after_failed_login(record: dict[str, Any] | None, now: datetime, *, max_failures: int = LOGIN_MAX_FAILURES,
                       window: timedelta = LOGIN_WINDOW, lock: timedelta = LOGIN_LOCK) -> dict[str, Any]:
    """The failure record of a username after one more failed attempt."""
    if record is None or record["first_at"] + window <= now:
        count, first_at = 1, now
    else:
        count, first_at = record["count"] + 1, record["first_at"]
    if count >= max_failures:
        return {"count": 0, "first_at": now, "locked_until": now + lock}
    return {"count": count, "first_at": first_at, "locked_until": None}


def login_locked_for(record: dict[str, Any] | None, now: datetime) -> int:
    """Seconds until a locked username may try again (0: not locked)."""
    until = (record or {}).get("locked_until")
    return math.ceil((until - now).total_seconds()) if until and until > now else 0


def normalize_username(username: str) -> str:
    return username.strip().lower()


def initials_of(name: str) -> str:
    return "".join(word[0] for word in name.split() if word[:1].isalpha())[:5].upper()


def validate_password(password: str, confirmation: str | None, *, username: str = "", path: str = "password") -> list[Problem]:
    problems = []
    if confirmation is not None and confirmation != password:
        problems.append(Problem("TIMBRA_PASSWORD_MISMATCH", "La contraseña y su confirmación no coinciden.", path="password_confirmation"))
    if len(password) < MIN_PASSWORD:
        problems.append(Problem("TIMBRA_PASSWORD_WEAK", f"La contraseña debe tener al menos {MIN_PASSWORD} caracteres.", path=path))
    elif not (re.search(r"[A-Za-zÑñ]", password) and re.search(r"\d", password)):
        problems.append(Problem("TIMBRA_PASSWORD_WEAK", "La contraseña debe combinar letras y números.", path=path))
    elif username and username.lower() in password.lower():
        problems.append(Problem("TIMBRA_PASSWORD_WEAK", "La contraseña no puede contener el nombre de usuario.", path=path))
    return problems


def validate_user(user: dict[str, object], *, allowed_roles: tuple[str, ...]) -> list[Problem]:
    """Profile fields of a user (not the password)."""
    problems = []
    if not str(user.get("name") or "").strip():
        problems.append(Problem("TIMBRA_USER_NAME_REQUIRED", "Escribe el nombre completo del usuario.", path="name"))
    username = str(user.get("username") or "")
    if not USERNAME.match(username):
        problems.append(Problem("TIMBRA_USERNAME_INVALID", "El usuario debe tener de 3 a 64 caracteres: letras minúsculas, números, punto, guion, guion bajo o @.", path="username"))
    for field in ("email", "alt_email"):
        value = user.get(field)
        if (field == "email" or value) and not EMAIL.match(str(value or "")):
            problems.append(Problem("TIMBRA_EMAIL_INVALID", "El correo electrónico no tiene un formato válido.", path=field))
    initials = user.get("initials")
    if initials and not INITIALS.match(str(initials)):
        problems.append(Problem("TIMBRA_INITIALS_INVALID", "Las iniciales deben ser de 1 a 5 letras.", path="initials"))
    role = user.get("role")
    if role not in allowed_roles:
        problems.append(Problem("TIMBRA_ROLE_INVALID", f"Rol no permitido: {role}. Usa {', '.join(allowed_roles)}.", path="role"))
    return problems
