"""`import inferkit` must stay light: no optional dependency may load with it (DESIGN rule 4).

Each check imports in a fresh interpreter through the layer test's probe (``tests/unit/test_layers.py``), so a
failure names the import chain that loaded the dependency.
"""

import pytest

from tests.unit.test_layers import Rule, check

OPTIONAL = ("grpc", "aiohttp", "orjson", "ml_dtypes", "tqdm", "google.protobuf", "opentelemetry")

# Module -> what importing it must not load (beyond its own "Must not import" line, which test_layers checks).
BASELINE = {
    "inferkit": OPTIONAL,
    "inferkit.codec.rest_v2": OPTIONAL,
    "inferkit.codec.rest_v1": OPTIONAL,
    "inferkit.config": OPTIONAL,
    "inferkit.errors": OPTIONAL,
    # "Importing this package imports neither aiohttp nor grpc" (inferkit/aio/__init__.py)
    "inferkit.aio": ("grpc", "aiohttp", "google.protobuf"),
    # "Importing this package does not import aiohttp or grpc" (inferkit/testing/__init__.py)
    "inferkit.testing": ("grpc", "aiohttp", "google.protobuf"),
}


@pytest.mark.parametrize(("module", "never"), sorted(BASELINE.items()))
def test_import_loads_no_optional_dependency(module: str, never: tuple[str, ...]) -> None:
    violations = check(module, Rule(text="baseline", forbidden=frozenset(never)))
    assert not violations, "\n".join(map(str, violations))


def test_all_names_resolve_and_are_sorted_into_public_api():
    import inferkit

    for name in inferkit.__all__:
        assert getattr(inferkit, name) is not None, name
