"""Which PAC an invoice goes to, and the lease that must outlive a PAC call."""

import pytest

from timbra_stamping.adapters.pacs import PacRegistry
from timbra_stamping.adapters.sandbox_pac import SandboxPacClient
from timbra_stamping.adapters.sw_sapien import SwSapienClient
from timbra_stamping.config import StampingConfig


def test_platform_default_and_per_issuer_override():
    config = StampingConfig(TIMBRA_PAC="sandbox", TIMBRA_PAC_BY_ISSUER='{"iss_sw": "sw"}', TIMBRA_SW_TOKEN="infinite")
    pacs = PacRegistry(config)
    assert pacs.name_for("iss_1") == "sandbox" and pacs.name_for("iss_sw") == "sw"
    assert isinstance(pacs.get("sandbox"), SandboxPacClient)
    assert isinstance(pacs.get("sw"), SwSapienClient)
    assert pacs.get("sw") is pacs.get("sw")  # one client (one connection pool, one token) per PAC


def test_an_unknown_pac_is_a_configuration_error():
    with pytest.raises(ValueError, match="unknown PAC"):
        PacRegistry(StampingConfig(TIMBRA_PAC="finkok"))
    with pytest.raises(ValueError, match="unknown PAC"):
        PacRegistry(StampingConfig(TIMBRA_PAC_BY_ISSUER='{"iss_1": "nope"}'))


def test_the_lease_outlives_a_lookup_plus_a_stamp_of_the_pacs_in_use():
    assert StampingConfig(TIMBRA_PAC_TIMEOUT=10, TIMBRA_STAMP_LEASE=30).effective_lease_s == 30
    assert StampingConfig(TIMBRA_PAC_TIMEOUT=20).effective_lease_s == 50
    assert StampingConfig(TIMBRA_PAC_BY_ISSUER='{"a": "sw"}', TIMBRA_SW_TIMEOUT=30).effective_lease_s == 70
