"""The notifier's own settings (environment variables; defaults suit a local platform)."""

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    #: eager: render when invoice.stamped arrives; on_demand: render on first download or when an
    #: email needs the PDF. An issuer's own choice (issuer.profile ``pdf_rendering``) wins.
    pdf_rendering: Literal["eager", "on_demand"] = Field(default="eager", alias="TIMBRA_PDF_RENDERING")
    #: how long the issuer's SMTP settings (with the password) are kept in memory
    smtp_cache_s: float = Field(default=60.0, alias="TIMBRA_NOTIFIER_SMTP_CACHE")
    #: email retries after a transient SMTP error: first delay (s), doubling, until the window ends
    email_retry_base_s: float = Field(default=30.0, alias="TIMBRA_EMAIL_RETRY_BASE")
    email_retry_window_s: float = Field(default=24 * 3600.0, alias="TIMBRA_EMAIL_RETRY_WINDOW")
    #: webhooks: first retry delay (s), multiplied by 3 per attempt, for up to 24 h
    webhook_retry_base_s: float = Field(default=5.0, alias="TIMBRA_WEBHOOK_RETRY_BASE")
    webhook_retry_window_s: float = Field(default=24 * 3600.0, alias="TIMBRA_WEBHOOK_RETRY_WINDOW")
    webhook_timeout_s: float = Field(default=10.0, alias="TIMBRA_WEBHOOK_TIMEOUT")
    webhook_concurrency: int = Field(default=32, alias="TIMBRA_WEBHOOK_CONCURRENCY")
    webhook_per_endpoint: int = Field(default=2, alias="TIMBRA_WEBHOOK_PER_ENDPOINT")
    worker_poll_s: float = Field(default=0.5, alias="TIMBRA_NOTIFIER_POLL")
