"""`import inferkit` must stay light: no optional dependency may load with it."""

import subprocess
import sys

OPTIONAL = ("grpc", "aiohttp", "orjson", "ml_dtypes", "tqdm", "google.protobuf")


def test_import_inferkit_loads_no_optional_dependency():
    code = (
        "import sys, inferkit, inferkit.codec.rest_v2, inferkit.codec.rest_v1, inferkit.config, inferkit.errors\n"
        f"print(','.join(m for m in {OPTIONAL!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import inferkit loaded: {out.stdout.strip()}"


def test_all_names_resolve_and_are_sorted_into_public_api():
    import inferkit

    for name in inferkit.__all__:
        assert getattr(inferkit, name) is not None, name
