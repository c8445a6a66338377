"""Several instances of one service in the devstack (docs/scaling.md): names, ports, environment
and the ``--scale`` flag. Starting them against the real broker is tests/test_scaling.py."""

from pathlib import Path

import pytest

from timbra_shared.devstack.cli import _scale
from timbra_shared.devstack.platform import PlatformConfig, PlatformError, base_name, instance_name


def test_extra_instances_are_named_after_their_service(tmp_path: Path) -> None:
    cfg = PlatformConfig.for_tests(tmp_path, instances={"stamping": 3})
    assert cfg.instance_names("stamping") == ["stamping", "stamping#2", "stamping#3"]
    assert cfg.instance_names("notifier") == ["notifier"]
    assert (instance_name("cfdi-builder", 1), instance_name("cfdi-builder", 2)) == ("cfdi-builder", "cfdi-builder#2")
    assert base_name("issuer-profile#4") == "issuer-profile"


def test_an_instance_runs_the_service_module_as_the_service_on_its_own_port(tmp_path: Path) -> None:
    cfg = PlatformConfig.for_tests(tmp_path)
    cfg.ports["stamping#2"] = 45678
    env = cfg.env_for("stamping#2")
    assert env["TIMBRA_SERVICE_NAME"] == "stamping"  # same consumer groups, same database, same metrics labels
    assert env["TIMBRA_HTTP_PORT"] == "45678" != cfg.env_for("stamping")["TIMBRA_HTTP_PORT"]
    assert cfg.argv_for("stamping#2") == cfg.argv_for("stamping")
    with pytest.raises(PlatformError):
        cfg.env_for("nope#2")


def test_the_scale_flag() -> None:
    assert _scale(["stamping=2", "cfdi-builder=3"]) == {"stamping": 2, "cfdi-builder": 3}
    for wrong in ("stamping", "stamping=0", "ingress=2", "stamping=x"):
        with pytest.raises(PlatformError):
            _scale([wrong])
