"""SW Sapien's REST contract, shared with the cancellation service: ``timbra_shared.pac.sw_envelope``."""

from timbra_shared.pac.sw_envelope import TIMBRE_PREVIO, parse_cancel_response, parse_stamp_response, result_from, split_message, transport_error

__all__ = ["TIMBRE_PREVIO", "parse_cancel_response", "parse_stamp_response", "result_from", "split_message", "transport_error"]
