"""The API's own description: /api/v1/openapi.json and the Swagger UI at /docs.

Swagger UI's files come from the ``swagger-ui-bundle`` package and are
served by this app, so the page works without internet access.
"""

from flask import Blueprint, Response, abort, current_app, jsonify, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from . import openapi

bp = Blueprint("docs", __name__)

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

PAGE = """<!DOCTYPE html>
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
  <script>
    window.ui = SwaggerUIBundle({
      url: "/api/v1/openapi.json",
      dom_id: "#swagger-ui",
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout",
      deepLinking: true,
      persistAuthorization: true,
      validatorUrl: null
    });
  </script>
</body>
</html>
"""


@bp.get("/api/v1/openapi.json")
def openapi_document():
    return jsonify(openapi.spec_for(current_app))


@bp.get("/docs")
def page():
    return Response(PAGE, mimetype="text/html")


@bp.get("/docs/<path:filename>")
def asset(filename):
    if filename not in ASSETS:
        abort(404)
    return send_from_directory(swagger_ui_path, filename)
