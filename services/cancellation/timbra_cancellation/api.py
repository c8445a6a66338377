"""HTTP routes owned by the cancellation service (the cancellation flow itself is issue 9)."""

from fastapi import APIRouter


def build_api() -> APIRouter:
    return APIRouter(prefix="/v1/invoices", tags=["cancellations"])
