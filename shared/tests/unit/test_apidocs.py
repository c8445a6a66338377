"""The merged OpenAPI document, the docs page and the AsyncAPI document (pure functions)."""

import json
import re

from openapi_spec_validator import validate

from timbra_shared.apidocs import asyncapi_document, merge_openapi, render_docs
from timbra_shared.ingress import route_for

def _service_doc(paths: dict, schemas: dict) -> dict:
    return {"openapi": "3.1.0", "info": {"title": "x", "version": "0"}, "paths": paths, "components": {"schemas": schemas}}


def _op(ref: str | None = None, op_id: str = "op", *, path_param: str | None = None) -> dict:
    op = {"operationId": op_id, "tags": ["invoices"], "responses": {"200": {"description": "ok"}, "422": {"description": "v", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}}}
    if path_param:
        op["parameters"] = [{"name": path_param, "in": "path", "required": True, "schema": {"type": "string"}}]
    if ref:
        op["requestBody"] = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}
    return op


HTTP_ERRORS = {
    "HTTPValidationError": {"type": "object", "properties": {"detail": {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}}}},
    "ValidationError": {"type": "object", "properties": {"msg": {"type": "string"}}},
}


def test_only_routed_public_operations_with_uniform_errors_and_renamed_collisions():
    builder = _service_doc(
        {"/v1/invoices": {"post": _op("Body", "create")}, "/v1/invoices/{invoice_id}/xml": {"get": _op(op_id="wrong_owner", path_param="invoice_id")},
         "/internal/v1/x": {"get": _op(op_id="internal")}},
        {"Body": {"type": "object", "properties": {"a": {"type": "string"}}}, **HTTP_ERRORS},
    )
    stamping = _service_doc({"/v1/invoices/{invoice_id}/xml": {"get": _op("Body", "xml", path_param="invoice_id")}}, {"Body": {"type": "object", "properties": {"b": {"type": "integer"}}}, **HTTP_ERRORS})
    merged = merge_openapi({"cfdi-builder": builder, "stamping": stamping}, route_for)
    validate(merged)
    assert set(merged["paths"]) == {"/v1/invoices", "/v1/invoices/{invoice_id}/xml"}
    assert merged["paths"]["/v1/invoices/{invoice_id}/xml"]["get"]["operationId"] == "xml"  # the owner's, not the builder's
    assert merged["paths"]["/v1/invoices"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Body"
    assert merged["paths"]["/v1/invoices/{invoice_id}/xml"]["get"]["requestBody"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/StampingBody"
    assert merged["components"]["schemas"]["StampingBody"]["properties"] == {"b": {"type": "integer"}}
    for item in merged["paths"].values():
        for op in item.values():
            assert op["responses"]["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            assert "Retry-After" in op["responses"]["429"]["headers"]
    assert "HTTPValidationError" not in merged["components"]["schemas"]
    assert "internal" not in json.dumps(merged["paths"])


def test_docs_page_lists_every_operation_without_external_assets():
    merged = merge_openapi({"cfdi-builder": _service_doc({"/v1/invoices": {"post": _op("Body", "create"), "get": _op(op_id="list")}}, {"Body": {"type": "object"}, **HTTP_ERRORS})}, route_for)
    html = render_docs(merged)
    assert html.count("class='op'") == 2 and "/v1/invoices" in html and "schema-Body" in html
    assert not re.search(r"""(src|href)=['"](https?:)?//""", html)


def test_asyncapi_document_describes_the_public_topics():
    doc = asyncapi_document()
    assert doc["asyncapi"] == "3.0.0"
    channels = {c["address"]: c for c in doc["channels"].values()}
    assert set(channels) == {"invoice.requested", "invoice.built", "invoice.sealed", "invoice.funded", "invoice.rejected",
                             "invoice.stamped", "invoice.stamp_failed", "invoice.rendered", "invoice.emailed"}
    operations = {op["channel"]["$ref"].rsplit("/", 1)[-1]: op["action"] for op in doc["operations"].values()}
    assert operations["invoice.requested:receive"] == "receive" and operations["invoice.stamped:send"] == "send"
    assert doc["components"]["schemas"]["InvoiceRequested"]["properties"]["request"] == {"$ref": "#/components/schemas/InvoiceRequest"}
