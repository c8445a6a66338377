"""Process settings, read from the environment (names are the public contract in docs/devstack.md)."""

import json
from functools import cached_property

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    service_name: str = Field(default="timbra", alias="TIMBRA_SERVICE_NAME")
    mongodb_url: str = Field(default="mongodb://127.0.0.1:27018/?replicaSet=rs0", alias="MONGODB_URL")
    kafka_bootstrap_servers: str = Field(default="127.0.0.1:19092", alias="KAFKA_BOOTSTRAP_SERVERS")
    http_host: str = Field(default="127.0.0.1", alias="TIMBRA_HTTP_HOST")
    http_port: int = Field(default=8080, alias="TIMBRA_HTTP_PORT")
    data_dir: str = Field(default=".data", alias="TIMBRA_DATA_DIR")
    admin_key: str = Field(default="", alias="TIMBRA_ADMIN_KEY", repr=False)
    master_key: str = Field(default="", alias="TIMBRA_MASTER_KEY", repr=False)
    internal_secret: str = Field(default="", alias="TIMBRA_INTERNAL_SECRET", repr=False)
    pac_url: str = Field(default="http://127.0.0.1:8090", alias="TIMBRA_PAC_URL")
    smtp_host: str = Field(default="127.0.0.1", alias="TIMBRA_SMTP_HOST")
    smtp_port: int = Field(default=1025, alias="TIMBRA_SMTP_PORT")
    smtp_sender: str = Field(default="facturas@timbra.local", alias="TIMBRA_SMTP_SENDER")
    trace_dir: str | None = Field(default=None, alias="TIMBRA_TRACE_DIR")
    otlp_endpoint: str | None = Field(default=None, alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    service_urls_json: str = Field(default="{}", alias="TIMBRA_SERVICE_URLS")
    log_level: str = Field(default="INFO", alias="TIMBRA_LOG_LEVEL")
    sweep_interval_s: float = Field(default=5.0, alias="TIMBRA_SWEEP_INTERVAL")
    stuck_after_s: float = Field(default=120.0, alias="TIMBRA_STUCK_AFTER")
    outbox_poll_s: float = Field(default=1.0, alias="TIMBRA_OUTBOX_POLL")

    @cached_property
    def service_urls(self) -> dict[str, str]:
        return json.loads(self.service_urls_json)

    @property
    def database_name(self) -> str:
        return "timbra_" + self.service_name.replace("-", "_")
