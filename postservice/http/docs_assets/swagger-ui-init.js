// Starts Swagger UI on /docs. A file of its own, not an inline script, so the
// page's Content-Security-Policy can refuse every inline script.
window.ui = SwaggerUIBundle({
  url: "/api/v1/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout",
  deepLinking: true,
  persistAuthorization: true,
  validatorUrl: null
});
