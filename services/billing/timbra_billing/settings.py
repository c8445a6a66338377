"""Billing's own settings (environment variables; sensible defaults for a local platform)."""

import json
from functools import cached_property

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BillingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    beneficiary: str = Field(default="Timbra Servicios Digitales S.A. de C.V.", alias="TIMBRA_BILLING_BENEFICIARY")
    bank: str = Field(default="BBVA Bancomer", alias="TIMBRA_BILLING_BANK")
    account: str = Field(default="0101010101", alias="TIMBRA_BILLING_ACCOUNT")
    clabe: str = Field(default="012180001010101013", alias="TIMBRA_BILLING_CLABE")
    receipts_email: str = Field(default="comprobantes@timbra.local", alias="TIMBRA_BILLING_RECEIPTS_EMAIL")
    # {"date": "Fecha", "description": "Concepto", "reference": "Referencia", "amount": "Abono"}
    csv_columns_json: str = Field(default="{}", alias="TIMBRA_BILLING_CSV_COLUMNS")
    expiry_interval_s: float = Field(default=60.0, alias="TIMBRA_BILLING_EXPIRY_INTERVAL")

    @cached_property
    def csv_columns(self) -> dict[str, str]:
        return {k: v for k, v in json.loads(self.csv_columns_json or "{}").items() if v}

    def payee(self) -> dict[str, str]:
        return {"beneficiary": self.beneficiary, "bank": self.bank, "account": self.account, "clabe": self.clabe, "receipts_email": self.receipts_email}
