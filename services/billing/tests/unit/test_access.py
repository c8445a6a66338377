"""Who counts as billing staff: the admin, or staff with the billing role; never an issuer."""

import pytest

from timbra_billing.api import is_billing_staff, issuer_scope, require_billing_staff
from timbra_shared.auth import Principal
from timbra_shared.errors import ApiError


@pytest.mark.parametrize(("principal", "allowed"), [
    (Principal(kind="admin", roles=("admin",)), True),
    (Principal(kind="staff", roles=("billing",), key_id="key_s"), True),
    (Principal(kind="staff", roles=("operator", "billing"), key_id="key_s"), True),
    (Principal(kind="staff", roles=("operator",), key_id="key_o"), False),
    (Principal(kind="issuer", issuer_id="iss_1"), False),
    (Principal(kind="issuer", issuer_id="iss_1", roles=("billing", "admin")), False),  # forged roles
])
def test_billing_staff_rule(principal, allowed):
    assert is_billing_staff(principal) is allowed
    if allowed:
        require_billing_staff(principal)
    else:
        with pytest.raises(ApiError) as excinfo:
            require_billing_staff(principal)
        assert excinfo.value.status == 403


def test_an_issuer_is_always_scoped_to_itself():
    assert issuer_scope(Principal(kind="issuer", issuer_id="iss_1"), "iss_other") == "iss_1"
    assert issuer_scope(Principal(kind="admin"), "iss_other") == "iss_other"
    with pytest.raises(ApiError):
        issuer_scope(Principal(kind="staff", roles=("operator",)), "iss_other")
