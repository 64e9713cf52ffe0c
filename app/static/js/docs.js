// Starts Swagger UI on /docs (a file, not inline script, so a strict CSP can apply).
window.addEventListener("DOMContentLoaded", function () {
  var el = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: el.dataset.specUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false, // a pasted key is not kept in localStorage
    validatorUrl: null,
  });
});
