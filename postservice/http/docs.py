"""The API's own description: /api/v1/openapi.json and the Swagger UI at /docs.

The document is generated from the views' decorators (see ``api.py``).
Swagger UI's files come from the ``swagger-ui-bundle`` package and are
served by this app, so the page works without internet access; the script
that starts it is ours, in ``docs_assets/``.
"""

import os

from flask import Blueprint as FlaskBlueprint
from flask import Response, abort, current_app, jsonify, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from postservice.http.api import Blueprint, document

bp = Blueprint("docs", __name__, description="This description")
pages = FlaskBlueprint("docs_pages", __name__)

OWN_ASSETS = os.path.join(os.path.dirname(__file__), "docs_assets")
INIT_SCRIPT = "swagger-ui-init.js"
# Only what the page loads; the rest of the package directory stays private.
ASSETS = frozenset(
    {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "favicon-16x16.png",
        "favicon-32x32.png",
    }
)

PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>postservice API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/{INIT_SCRIPT}"></script>
</body>
</html>
"""


@bp.get("/api/v1/openapi.json")
@bp.response(200, {"type": "object"}, description="The OpenAPI document")
def openapi_document():
    """This document"""
    return jsonify(document(current_app))


@pages.get("/docs")
def page():
    return Response(PAGE, mimetype="text/html")


@pages.get("/docs/<path:filename>")
def asset(filename):
    if filename == INIT_SCRIPT:
        return send_from_directory(OWN_ASSETS, filename)
    if filename not in ASSETS:
        abort(404)
    return send_from_directory(swagger_ui_path, filename)
