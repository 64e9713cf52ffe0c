// AINS operator console: the little JavaScript the pages need besides htmx.
"use strict";

// htmx requests that change something carry the CSRF token, as forms do in a hidden field.
document.addEventListener("htmx:configRequest", (event) => {
  const verb = (event.detail.verb || "get").toLowerCase();
  if (verb === "get") {
    // Keep pushed URLs short: /tasks?status=FAILED rather than /tasks?status=FAILED&client=&...
    const data = event.detail.formData;
    if (data) {
      for (const [name, value] of Array.from(data.entries())) {
        if (value === "") data.delete(name);
      }
    }
    return;
  }
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta) event.detail.headers["X-CSRFToken"] = meta.content;
});
