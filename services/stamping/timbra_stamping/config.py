"""The stamping service's own settings (environment variables; see docs/stamping.md)."""

import json
from functools import cached_property

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StampingConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    # which PAC: the platform default, and optional per-issuer overrides {"<issuer_id>": "<pac>"}
    pac: str = Field(default="sandbox", alias="TIMBRA_PAC")
    pac_by_issuer_json: str = Field(default="{}", alias="TIMBRA_PAC_BY_ISSUER")
    pac_url: str = Field(default="http://127.0.0.1:8090", alias="TIMBRA_PAC_URL")
    pac_token: str = Field(default="sandbox-token", alias="TIMBRA_PAC_TOKEN", repr=False)
    pac_timeout_s: float = Field(default=10.0, alias="TIMBRA_PAC_TIMEOUT")
    sw_url: str = Field(default="https://services.test.sw.com.mx", alias="TIMBRA_SW_URL")
    sw_user: str = Field(default="", alias="TIMBRA_SW_USER")
    sw_password: str = Field(default="", alias="TIMBRA_SW_PASSWORD", repr=False)
    sw_token: str = Field(default="", alias="TIMBRA_SW_TOKEN", repr=False)
    sw_timeout_s: float = Field(default=30.0, alias="TIMBRA_SW_TIMEOUT")

    # the delayed-retry machinery
    workers: int = Field(default=64, alias="TIMBRA_STAMP_WORKERS")
    backoff_base_s: float = Field(default=1.0, alias="TIMBRA_STAMP_BACKOFF_BASE")
    backoff_max_s: float = Field(default=300.0, alias="TIMBRA_STAMP_BACKOFF_MAX")
    max_attempts: int = Field(default=40, alias="TIMBRA_STAMP_MAX_ATTEMPTS")
    deadline_margin_s: float = Field(default=600.0, alias="TIMBRA_STAMP_DEADLINE_MARGIN")
    lease_s: float = Field(default=30.0, alias="TIMBRA_STAMP_LEASE")
    poll_s: float = Field(default=0.5, alias="TIMBRA_STAMP_POLL")
    breaker_threshold: int = Field(default=5, alias="TIMBRA_PAC_BREAKER_THRESHOLD")
    breaker_open_s: float = Field(default=5.0, alias="TIMBRA_PAC_BREAKER_OPEN")
    breaker_max_open_s: float = Field(default=60.0, alias="TIMBRA_PAC_BREAKER_MAX_OPEN")
    consumers: int = Field(default=1, alias="TIMBRA_STAMP_CONSUMERS")

    @cached_property
    def pac_by_issuer(self) -> dict[str, str]:
        return json.loads(self.pac_by_issuer_json or "{}")

    @property
    def effective_lease_s(self) -> float:
        # a lease must outlive a lookup plus a stamp call, or another instance could take the job mid-call
        in_use = {self.pac, *self.pac_by_issuer.values()}
        timeout = max(self.sw_timeout_s if name == "sw" else self.pac_timeout_s for name in in_use)
        return max(self.lease_s, 2 * timeout + 10)
