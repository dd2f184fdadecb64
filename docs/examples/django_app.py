"""A Django view calling a model server through the process-wide inferkit client (see shared_client.py).

A whole Django project in one file, to keep the example short; in a real project the view goes in an app's
``views.py`` and ``shared_client`` in a module of your own.

    pip install inferkit django
    INFERKIT_URL=http://127.0.0.1:8000 python docs/examples/django_app.py runserver 8080
    INFERKIT_URL=http://127.0.0.1:8000 python docs/examples/django_app.py --selftest
"""

from __future__ import annotations

import json
import sys
from typing import Any, Optional, Sequence

import shared_client

from inferkit.errors import InferkitError, ServiceUnavailableError, TransportError

try:
    import django
    from django.conf import settings
except ImportError:  # the example is optional: the test suite skips it without Django
    django = None


def classify(request: Any) -> Any:
    """POST /classify with ``{"rows": [[f0, f1, f2, f3], ...]}`` -> ``{"labels": [...]}``."""
    from django.http import JsonResponse  # noqa: PLC0415 - needs configured settings

    if request.method != "POST":
        return JsonResponse({"error": "POST a JSON body"}, status=405)
    try:
        rows = json.loads(request.body or b"{}").get("rows", [])
        labels = shared_client.classify(rows)
    except ValueError as exc:  # bad JSON or bad rows (EncodeError is a ValueError too)
        return JsonResponse({"error": str(exc)}, status=400)
    except (TransportError, ServiceUnavailableError) as exc:  # server down or overloaded, after retries
        return JsonResponse({"error": f"model server unavailable: {exc}"}, status=503)
    except InferkitError as exc:  # any other failure of the model server
        return JsonResponse({"error": f"model server error: {exc}"}, status=502)
    return JsonResponse({"labels": labels})


def setup() -> None:
    """Configure a minimal Django project whose URLconf is this module."""
    if django is None:
        raise ImportError("this example needs Django: pip install django")
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="example-only",  # noqa: S106 - a throwaway example project
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
        )
        django.setup()


def _urlpatterns() -> list[Any]:
    from django.urls import path  # noqa: PLC0415
    from django.views.decorators.csrf import csrf_exempt  # noqa: PLC0415

    return [path("classify", csrf_exempt(classify))]


def __getattr__(name: str) -> Any:
    # Django reads ROOT_URLCONF's `urlpatterns` lazily; building it lazily keeps this module importable
    # (and testable) before settings are configured.
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if django is None:
        print("Django is not installed (pip install django); nothing to do", file=sys.stderr)
        return 0
    setup()
    if argv[:1] == ["--selftest"]:
        from django.test import Client  # noqa: PLC0415

        reply = Client().post(
            "/classify", data={"rows": [[5.1, 3.5, 1.4, 0.2], [6.9, 3.1, 5.4, 2.1]]}, content_type="application/json"
        )
        print(reply.status_code, reply.content.decode())
        shared_client.close()
        return 0 if reply.status_code == 200 else 1
    from django.core.management import execute_from_command_line  # noqa: PLC0415

    execute_from_command_line([sys.argv[0], *argv])
    return 0


if __name__ == "__main__":
    sys.exit(main())
