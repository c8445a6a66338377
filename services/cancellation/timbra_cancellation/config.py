"""The cancellation service's settings (environment variables; see docs/cancellation.md). The PAC
choice is the platform's (``TIMBRA_PAC``, ``TIMBRA_PAC_BY_ISSUER``), shared with stamping."""

from pydantic import Field

from timbra_shared.pac.registry import PacSettings


class CancellationConfig(PacSettings):
    #: PAC call timeout for cancellation and status requests
    cancel_pac_timeout_s: float = Field(default=10.0, alias="TIMBRA_CANCEL_PAC_TIMEOUT")
    #: status polls: first delay, doubling (with jitter) up to the maximum
    poll_base_s: float = Field(default=5.0, alias="TIMBRA_CANCEL_POLL_BASE")
    poll_max_s: float = Field(default=1800.0, alias="TIMBRA_CANCEL_POLL_MAX")
    #: PAC unavailable: retries of the request (and of a status poll)
    retry_base_s: float = Field(default=1.0, alias="TIMBRA_CANCEL_RETRY_BASE")
    retry_max_s: float = Field(default=120.0, alias="TIMBRA_CANCEL_RETRY_MAX")
    #: no final state after this long: escalate to an operator (the receptor has 3 business days)
    give_up_s: float = Field(default=14 * 86400.0, alias="TIMBRA_CANCEL_GIVE_UP")
    lease_s: float = Field(default=30.0, alias="TIMBRA_CANCEL_LEASE")
    scheduler_poll_s: float = Field(default=0.5, alias="TIMBRA_CANCEL_SCHEDULER_POLL")
    workers: int = Field(default=8, alias="TIMBRA_CANCEL_WORKERS")

    @property
    def effective_lease_s(self) -> float:
        # a lease must outlive a cancel call plus a status call, or another instance could take the job mid-call
        return max(self.lease_s, 2 * self.cancel_pac_timeout_s + 1)
