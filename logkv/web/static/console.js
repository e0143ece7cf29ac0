// The logkv console's only script (the pages allow no inline script): the buttons that
// open or close every node of a JSON tree. Everything else works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-tree]")) {
    button.addEventListener("click", () => {
      const open = button.dataset.tree === "open";
      for (const node of document.querySelectorAll(".tree details")) {
        node.open = open;
      }
    });
  }
});
