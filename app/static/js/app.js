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

// A region that refreshes itself (data-pause-while-editing) skips a refresh while the
// operator is in one of its forms or has typed into one (or ticked a box, or picked an
// option), or has opened a <details> in it (a confirmation, event data): the swap would
// wipe their input or close what they opened.
document.addEventListener("htmx:beforeRequest", (event) => {
  const region = event.detail.elt;
  if (!(region instanceof Element) || !region.hasAttribute("data-pause-while-editing")) return;
  const active = document.activeElement;
  const focused = active && region.contains(active) && active.closest("form");
  const typed = Array.from(region.querySelectorAll("form input, form textarea, form select")).some(
    (input) => {
      if (input instanceof HTMLSelectElement) {
        // With no option marked selected, a single select starts on its first one.
        const initial = Math.max(0, Array.from(input.options).findIndex((o) => o.defaultSelected));
        return input.selectedIndex !== initial;
      }
      if (input.type === "checkbox" || input.type === "radio") return input.checked !== input.defaultChecked;
      return input.type !== "hidden" && input.value !== input.defaultValue;
    },
  );
  const opened = region.querySelector("details[open]");
  if (focused || typed || opened) event.preventDefault();
});

// Row selection: a select-all box, a live count, and bulk buttons that need a selection.
function syncSelection(form) {
  const boxes = Array.from(form.querySelectorAll('input[type="checkbox"][name="task_ids"]'));
  const ticked = boxes.filter((box) => box.checked).length;
  for (const all of form.querySelectorAll("[data-select-all]")) {
    all.checked = boxes.length > 0 && ticked === boxes.length;
    all.indeterminate = ticked > 0 && ticked < boxes.length;
  }
  for (const count of form.querySelectorAll("[data-selected-count]")) {
    count.textContent = String(ticked);
  }
  for (const button of form.querySelectorAll("[data-needs-selection]")) {
    button.disabled = ticked === 0;
  }
}

document.addEventListener("change", (event) => {
  const target = event.target;
  if (!(target instanceof HTMLInputElement) || !target.form) return;
  if (target.hasAttribute("data-select-all")) {
    const name = target.getAttribute("data-select-all");
    for (const box of target.form.querySelectorAll(`input[type="checkbox"][name="${name}"]`)) {
      box.checked = target.checked;
    }
  } else if (target.name !== "task_ids") {
    return;
  }
  syncSelection(target.form);
});

// Forms with a selection start in step (buttons off until a row is ticked), also after a
// swap and when the browser restores ticked boxes from its back/forward cache.
function syncAllSelections(root) {
  const scope = root instanceof Element || root instanceof Document ? root : document;
  for (const bar of scope.querySelectorAll("[data-selection-bar]")) {
    if (bar.closest("form")) syncSelection(bar.closest("form"));
  }
}
document.addEventListener("htmx:load", (event) => syncAllSelections(event.target));
window.addEventListener("pageshow", () => syncAllSelections(document));

// Menus built from <details> (the admin pages, the account, confirmations) close
// when the operator clicks elsewhere or presses Escape, as menus do.
function closeMenus(except) {
  for (const menu of document.querySelectorAll(
"details.nav-menu[open], details.account-menu[open]")) {
    if (!except || !menu.contains(except)) menu.removeAttribute("open");
  }
}
document.addEventListener("click", (event) => closeMenus(event.target instanceof Node ? event.target : null));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeMenus(null);
});

// The theme switch in the account menu: System (no data-theme: follow the OS), Light or Dark.
// The choice is kept in localStorage; js/theme.js applies it before the next page paints.
const THEME_KEY = "ains-theme";

function storedTheme() {
  try {
    const value = window.localStorage.getItem(THEME_KEY);
    return value === "light" || value === "dark" ? value : "system";
  } catch {
    return "system";
  }
}

function applyTheme(theme) {
  const root = document.documentElement;
  if (theme === "light" || theme === "dark") root.setAttribute("data-theme", theme);
  else root.removeAttribute("data-theme");
  for (const input of document.querySelectorAll('.theme-switch input[name="theme"]')) {
    input.checked = input.value === theme;
  }
}

document.addEventListener("change", (event) => {
  const target = event.target;
  if (!(target instanceof HTMLInputElement) || !target.closest(".theme-switch")) return;
  try {
    if (target.value === "system") window.localStorage.removeItem(THEME_KEY);
    else window.localStorage.setItem(THEME_KEY, target.value);
  } catch {
    // Storage refused: the choice lasts for this page only.
  }
  applyTheme(target.value);
});

// Another tab changed the theme: follow it.
window.addEventListener("storage", (event) => {
  if (event.key === THEME_KEY || event.key === null) applyTheme(storedTheme());
});
// A deferred script: the header is parsed by now, so its radios show the stored choice.
applyTheme(storedTheme());
