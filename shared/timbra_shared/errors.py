"""Error types shared by services: coded problems for issuers, and the transient/permanent split
that decides between a retry and the dead-letter topic."""

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

Source = Literal["timbra", "sat", "pac"]


@dataclass
class Problem:
    code: str
    message: str
    source: Source = "timbra"
    path: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"message": self.message, "code": self.code, "source": self.source, "path": self.path}


@dataclass
class ApiError(Exception):
    """An HTTP error in the public format ``{ok: false, message, code, errors: [...]}``."""

    status: int
    code: str
    message: str
    errors: list[Problem] = field(default_factory=list)

    def body(self) -> dict[str, object]:
        return {"ok": False, "message": self.message, "code": self.code, "errors": [p.as_dict() for p in self.errors]}


def not_found(what: str = "Recurso") -> ApiError:
    return ApiError(404, "not_found", f"{what} no encontrado.")


class RetryLater(Exception):
    """Transient: the message will be redelivered after a back-off (dependency not ready, PAC down)."""


class PoisonMessage(Exception):
    """Permanent: the message can never be processed; it goes to the dead-letter topic."""


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying as it is: a dependency (MongoDB, the broker) is briefly away."""
    if isinstance(exc, RetryLater | ConnectionFailure | asyncio.TimeoutError | ConnectionError):
        return True
    if isinstance(exc, PyMongoError) and (
        exc.has_error_label("TransientTransactionError") or exc.has_error_label("RetryableWriteError")
    ):
        return True
    if isinstance(exc, OperationFailure) and exc.code in {11600, 11602, 91, 189, 10107, 13435, 13436}:
        return True
    return type(exc).__module__.startswith("aiokafka")
