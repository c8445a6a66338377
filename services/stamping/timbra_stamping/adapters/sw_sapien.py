"""SW Sapien's client, shared with the cancellation service: ``timbra_shared.pac.sw_sapien``."""

from timbra_shared.pac.sw_sapien import AUTH_PATH, REFRESH_BEFORE_S, STAMP_PATH, SwSapienClient

__all__ = ["AUTH_PATH", "REFRESH_BEFORE_S", "STAMP_PATH", "SwSapienClient"]
