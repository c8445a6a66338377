"""Exception types of the CFDI core. Every error carries a stable ``code``."""

from __future__ import annotations


class CfdiError(Exception):
    """Base class: ``code`` is stable and machine readable, ``message`` is Spanish."""

    code: str = "cfdi_error"

    def __init__(self, code: str | None = None, message: str | None = None):
        if code is not None:
            self.code = code
        self.message = message or self.code
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class XmlError(CfdiError):
    """The input is not acceptable XML (malformed, too large, DTD/entities, ...)."""

    code = "xml_malformed"


class NotCfdiError(CfdiError):
    """Well-formed XML whose root is not a cfdi:Comprobante (or TFD where allowed)."""

    code = "not_cfdi"


class UnsupportedVersionError(CfdiError):
    """A CFDI of another version (3.2, 3.3): only 4.0 is supported."""

    code = "unsupported_version"


class BuildError(CfdiError, ValueError):
    """The input model cannot produce a valid CFDI (e.g. float amounts, bad decimals)."""

    code = "build_error"


class CsdError(CfdiError):
    """Problems loading or using a CSD. ``code`` is one of the constants below."""

    INVALID_CERTIFICATE = "invalid_certificate"
    INVALID_KEY = "invalid_key"
    WRONG_PASSWORD = "wrong_password"
    KEY_MISMATCH = "key_mismatch"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    FIEL_NOT_CSD = "fiel_not_csd"
    RFC_MISMATCH = "rfc_mismatch"

    code = "csd_error"
