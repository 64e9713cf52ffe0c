// The theme chosen in the header (light or dark; none means follow the system), applied
// before the page paints: this file loads in <head> without defer, so there is no flash of
// the other theme. A strict CSP allows no inline script, hence a file of its own.
"use strict";
(function applyStoredTheme() {
  let theme = null;
  try {
    theme = window.localStorage.getItem("ains-theme");
  } catch {
    // Storage refused (a privacy mode): follow the system.
  }
  if (theme === "light" || theme === "dark") {
    document.documentElement.setAttribute("data-theme", theme);
  }
})();
