"""Entry point: `app` for `make serve` and `flask --app idp`; `python idp.py` serves HTTPS."""

import sys

from identity import ConfigError, create_app

try:
    app = create_app()
except ConfigError as exc:
    sys.exit(f"idp: configuration error: {exc}")

if __name__ == "__main__":
    from identity.bootstrap import serve

    serve(app)
