// The operator console's only script (CSP: scripts from this origin only, none inline).
// Server-rendered dialogs become modal, the ⋮ menus open and close, and the set-up dialog's Preview
// follows the ticked boxes. Every control also works as a plain link or form without it.
"use strict";

function showDialogs() {
  for (const dialog of document.querySelectorAll("dialog[data-modal][open]")) {
    dialog.close();
    dialog.showModal();
    dialog.addEventListener("cancel", () => {          // Escape: leave the way "Close" does
      const close = dialog.querySelector("a.button[href]");
      if (close) window.location.assign(close.href);
    });
  }
}

function setupMenus() {
  const closeAll = (except) => {
    for (const button of document.querySelectorAll("[data-menu-button][aria-expanded=true]")) {
      if (button === except) continue;
      button.setAttribute("aria-expanded", "false");
      document.getElementById(button.getAttribute("aria-controls")).hidden = true;
    }
  };
  for (const button of document.querySelectorAll("[data-menu-button]")) {
    const menu = document.getElementById(button.getAttribute("aria-controls"));
    button.addEventListener("click", (event) => {
      event.stopPropagation();
      const open = button.getAttribute("aria-expanded") !== "true";
      closeAll(button);
      button.setAttribute("aria-expanded", String(open));
      menu.hidden = !open;
      if (open) menu.querySelector("[role=menuitem]").focus();
    });
    menu.addEventListener("keydown", (event) => {
      const items = [...menu.querySelectorAll("[role=menuitem]")];
      const at = items.indexOf(document.activeElement);
      if (event.key === "ArrowDown") { items[(at + 1) % items.length].focus(); event.preventDefault(); }
      if (event.key === "ArrowUp") { items[(at - 1 + items.length) % items.length].focus(); event.preventDefault(); }
      if (event.key === "Escape") { closeAll(null); button.focus(); }
    });
  }
  document.addEventListener("click", () => closeAll(null));
}

function sectionState(details) {
  const all = details.querySelector("input[data-all]");
  const ticked = details.querySelectorAll("input[type=checkbox]:not([data-all]):checked").length;
  details.querySelector("[data-state]").textContent = all.checked ? "All" : ticked ? `${ticked} selected` : "none";
}

function setupPreview() {
  const form = document.getElementById("sync-form");
  if (!form) return;
  const region = document.getElementById("preview");
  let timer = null;
  let sent = 0;
  const refresh = async () => {
    const mine = ++sent;
    region.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(form.dataset.previewUrl, {
        // URL-encoded, as the browser posts the form itself: the admin app's body guard reads each body
        // first, and aiohttp cannot parse a multipart body that was already read.
        method: "POST", body: new URLSearchParams(new FormData(form)), credentials: "same-origin",
      });
      const html = await response.text();
      if (mine !== sent) return;                        // a newer tick's answer is on its way
      if (response.ok) {
        // Server-rendered with autoescaping: the same template as the first render.
        region.innerHTML = html;
      } else {
        region.textContent = "The preview is unavailable right now; you can still save.";
      }
    } catch (err) {
      if (mine === sent) region.textContent = "The preview is unavailable right now; you can still save.";
    } finally {
      if (mine === sent) region.removeAttribute("aria-busy");
    }
  };
  if (region.querySelector("[data-pending]")) refresh();  // the first figures, once the dialog is open
  form.addEventListener("change", (event) => {
    const box = event.target;
    const details = box.closest("details");
    if (box.matches("input[data-all]") && box.checked) {
      for (const other of details.querySelectorAll("input[type=checkbox]:not([data-all])")) other.checked = false;
    } else if (box.checked) {
      details.querySelector("input[data-all]").checked = false;
    }
    sectionState(details);
    clearTimeout(timer);
    timer = setTimeout(refresh, 150);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  showDialogs();
  setupMenus();
  setupPreview();
});
