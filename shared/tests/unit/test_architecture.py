"""Hard rules checked statically: no service imports another, nothing uses Motor, and every
service has the same layout."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SERVICES = sorted(p for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists())
PACKAGES = {s.name: "timbra_" + s.name.replace("-", "_") for s in SERVICES}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_there_are_seven_services() -> None:
    assert set(PACKAGES) == {"issuer-profile", "catalog", "cfdi-builder", "stamping", "cancellation", "billing", "notifier"}


@pytest.mark.parametrize("service", sorted(PACKAGES))
def test_no_service_imports_another_service(service: str) -> None:
    own = PACKAGES[service]
    others = set(PACKAGES.values()) - {own}
    offenders = {}
    for path in (ROOT / "services" / service).rglob("*.py"):
        bad = _imports(path) & others
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, f"{service} imports other services: {offenders}"


def test_the_common_library_imports_no_service() -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & set(PACKAGES.values())) for p in (ROOT / "shared" / "timbra_shared").rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_nothing_uses_motor() -> None:
    users = [str(p.relative_to(ROOT)) for p in [*ROOT.glob("services/*/timbra_*/**/*.py"), *ROOT.glob("shared/timbra_shared/**/*.py")] if "motor" in _imports(p)]
    assert not users, f"Motor is deprecated; use pymongo's AsyncMongoClient: {users}"


@pytest.mark.parametrize("service", sorted(PACKAGES))
def test_every_service_has_the_same_layout(service: str) -> None:
    package = ROOT / "services" / service / PACKAGES[service]
    missing = [name for name in ("main.py", "handlers.py", "api.py", "service.py", "domain", "adapters") if not (package / name).exists()]
    assert not missing, f"{service} lacks {missing}"
