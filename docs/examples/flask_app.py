"""A Flask view calling a model server through the process-wide inferkit client (see shared_client.py).

pip install inferkit flask
INFERKIT_URL=http://127.0.0.1:8000 python docs/examples/flask_app.py            # serve on :5000
INFERKIT_URL=http://127.0.0.1:8000 python docs/examples/flask_app.py --selftest # one request, no server

curl -s localhost:5000/classify -H 'content-type: application/json' -d '{"rows": [[5.1, 3.5, 1.4, 0.2]]}'
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional, Sequence

import shared_client

from inferkit.errors import InferkitError, ServiceUnavailableError, TransportError

try:
    import flask
except ImportError:  # the example is optional: the test suite skips it without Flask
    flask = None


def create_app() -> Any:
    """The Flask application (one client for all its requests and threads)."""
    if flask is None:
        raise ImportError("this example needs Flask: pip install flask")
    app = flask.Flask(__name__)

    @app.post("/classify")
    def classify() -> Any:
        body = flask.request.get_json(silent=True) or {}
        try:
            labels = shared_client.classify(body.get("rows", []))
        except ValueError as exc:  # bad input from the caller (EncodeError is a ValueError too)
            return flask.jsonify(error=str(exc)), 400
        except (TransportError, ServiceUnavailableError) as exc:  # server down or overloaded, after retries
            return flask.jsonify(error=f"model server unavailable: {exc}"), 503
        except InferkitError as exc:  # any other failure of the model server
            return flask.jsonify(error=f"model server error: {exc}"), 502
        return flask.jsonify(labels=labels)

    return app


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Flask + inferkit example")
    parser.add_argument("--selftest", action="store_true", help="send one request through Flask's test client")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    if flask is None:
        print("Flask is not installed (pip install flask); nothing to do", file=sys.stderr)
        return 0
    app = create_app()
    if args.selftest:
        reply = app.test_client().post("/classify", json={"rows": [[5.1, 3.5, 1.4, 0.2], [6.9, 3.1, 5.4, 2.1]]})
        print(reply.status_code, json.dumps(reply.get_json()))
        shared_client.close()
        return 0 if reply.status_code == 200 else 1
    app.run(port=args.port, threaded=True)  # threaded: every thread shares the one client
    return 0


if __name__ == "__main__":
    sys.exit(main())
