"""Fixtures for the CFDI core tests.

SAT's own material (example CFDIs, test CSDs) lives outside the repository in
``<repo>/../shared`` (override with ``TIMBRA_SHARED_DIR``). Tests that need it
skip with a plain reason when it is absent (e.g. in a fresh clone).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from timbra_shared.cfdi import load_csd
from timbra_shared.cfdi.testing import make_csd

REPO = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("TIMBRA_SHARED_DIR", REPO.parent / "shared"))
SAT_CFDI_DIR = SHARED / "fixtures" / "cfdi"
SAT_CSD_DIR = SHARED / "fixtures" / "csd"
GOLDEN = Path(__file__).resolve().parent / "golden"
PASSWORD = "12345678a"
# Instant inside the validity of SAT's EKU9003173C9 test CSD (2023-05-18 .. 2027-05-18).
SAT_AT = datetime(2025, 1, 15, 18, 0, tzinfo=timezone.utc)


def sat_cfdi_files() -> list[Path]:
    if not SAT_CFDI_DIR.is_dir():
        return []
    return sorted(SAT_CFDI_DIR.glob("*.xml"))


def require_sat_cfdi() -> list[Path]:
    files = sat_cfdi_files()
    if not files:
        pytest.skip(f"{SAT_CFDI_DIR} not present: SAT example files not tested")
    return files


def require_sat_csd(name: str) -> tuple[bytes, bytes]:
    cer, key = SAT_CSD_DIR / f"{name}.cer", SAT_CSD_DIR / f"{name}.key"
    if not (cer.exists() and key.exists()):
        pytest.skip(f"{SAT_CSD_DIR} not present: SAT's real test CSD {name} not tested")
    return cer.read_bytes(), key.read_bytes()


@pytest.fixture(scope="session")
def gen_csd():
    """A generated, valid CSD for EKU9003173C9 (loaded)."""
    cer, key = make_csd()
    return load_csd(cer, key, PASSWORD)


@pytest.fixture(scope="session")
def gen_csd_files():
    return make_csd()


@pytest.fixture(scope="session")
def sat_csd():
    cer, key = require_sat_csd("EKU9003173C9")
    return load_csd(cer, key, PASSWORD, at=SAT_AT)


@pytest.fixture(scope="session")
def sat_examples() -> list[Path]:
    """SAT's example CFDI 4.0 files (skips when ../shared is absent)."""
    return require_sat_cfdi()


@pytest.fixture(scope="session")
def sat_csd_files():
    """Factory: name -> (cer, key) of SAT's real test CSDs (skips when absent)."""
    return require_sat_csd


@pytest.fixture(scope="session")
def sat_at() -> datetime:
    return SAT_AT


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN
