"""The ingress routing table: which service owns which public path."""

import inspect
import re
from types import SimpleNamespace

import pytest
from fastapi.routing import APIRoute

from timbra_shared.ingress import route_for


@pytest.mark.parametrize(
    ("method", "path", "service"),
    [
        ("GET", "/v1/invoices/inv_01abc/xml", "stamping"),
        ("GET", "/v1/invoices/inv_01abc/pdf", "notifier"),
        ("POST", "/v1/invoices/inv_01abc/email", "notifier"),
        ("DELETE", "/v1/invoices/inv_01abc", "cancellation"),
        ("GET", "/v1/invoices/inv_01abc/cancellation", "cancellation"),
        ("POST", "/v1/invoices/inv_01abc/cancellation", "cancellation"),
        ("GET", "/v1/invoices", "cfdi-builder"),
        ("POST", "/v1/invoices", "cfdi-builder"),
        ("GET", "/v1/invoices/inv_01abc", "cfdi-builder"),
        ("POST", "/v1/issuers", "issuer-profile"),
        ("GET", "/v1/issuers/me", "issuer-profile"),
        ("PUT", "/v1/issuers/me/csd", "issuer-profile"),
        ("GET", "/v1/billing/balance", "billing"),
        ("POST", "/v1/billing/credits", "billing"),
        ("GET", "/v1/catalogs/c_UsoCFDI", "catalog"),
        ("GET", "/v1/customers", "catalog"),
        ("POST", "/v1/products", "catalog"),
        ("GET", "/v1/branches/br_1", "catalog"),
        ("GET", "/v1/tickets/t_1", "catalog"),
    ],
)
def test_route_for(method, path, service):
    assert route_for(method, path) == service


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/unknown"),
        ("GET", "/v2/invoices"),
        ("GET", "/invoices"),
        ("GET", "/"),
        ("GET", "/healthz"),
        ("POST", "/internal/v1/auth/exchange"),
        ("GET", "/metrics"),
    ],
)
def test_unknown_paths_have_no_owner(method, path):
    assert route_for(method, path) is None


def test_xml_and_pdf_are_only_routed_to_their_owners_for_get():
    assert route_for("DELETE", "/v1/invoices/inv_1/xml") != "stamping"
    assert route_for("POST", "/v1/invoices/inv_1/pdf") != "notifier"


def test_delete_of_the_collection_is_not_a_cancellation():
    assert route_for("DELETE", "/v1/invoices") == "cfdi-builder"
    assert route_for("DELETE", "/v1/invoices/inv_1/xml") != "cancellation"


def _service_routes():
    """Every public route the services declare, with the service the ingress must send it to."""
    from timbra_billing.api import build_api as billing_api
    from timbra_cancellation.api import build_api as cancellation_api
    from timbra_catalog.api import build_api as catalog_api
    from timbra_cfdi_builder.api import build_api as builder_api
    from timbra_issuer_profile.api import build_api as issuer_api
    from timbra_notifier.api import build_api as notifier_api
    from timbra_stamping.api import build_api as stamping_api

    def build(factory):  # noqa: ANN001, ANN202
        # one stand-in per dependency, so adding a dependency to a service does not break this test
        params = inspect.signature(factory).parameters.values()
        return factory(*("secret" if p.annotation in (str, "str") else SimpleNamespace() for p in params if p.default is p.empty))

    routers = {
        "billing": build(billing_api),
        "cancellation": build(cancellation_api),
        "catalog": build(catalog_api),
        "cfdi-builder": build(builder_api),
        "issuer-profile": build(issuer_api),
        "notifier": build(notifier_api),
        "stamping": build(stamping_api),
    }
    for service, router in routers.items():
        for route in router.routes:
            if isinstance(route, APIRoute) and route.path.startswith("/v1/"):
                concrete = re.sub(r"\{[^}]+\}", "x_1", route.path)
                for method in route.methods:
                    yield service, method, concrete


def test_every_public_service_route_is_routed_to_its_service():
    routes = list(_service_routes())
    assert routes, "no service routes found"
    wrong = [(m, p, s, route_for(m, p)) for s, m, p in routes if route_for(m, p) != s]
    assert wrong == []


def test_internal_routes_are_never_exposed():
    from timbra_issuer_profile.api import build_api

    internal = [r.path for r in build_api(SimpleNamespace(), "secret").routes if isinstance(r, APIRoute) and r.path.startswith("/internal/")]
    assert internal
    assert all(route_for(m, p) is None for p in internal for m in ("GET", "POST", "PUT", "DELETE"))
