// #/events: the event feed (always kept in the side column) shown full width.

import { fill, h } from "../dom.js";

export function mount(root) {
  document.body.classList.add("feed-wide");
  fill(root, h("p", { class: "dim" }, "Every event, newest on top."));
  const filter = document.getElementById("feed-filter");
  if (filter) filter.focus();
  return {
    unmount() {
      document.body.classList.remove("feed-wide");
    },
  };
}
