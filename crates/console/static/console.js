// Dispatch console: the failed-deliveries page's "select all" box (everything else works
// without this script; htmx adds the live refresh).
document.addEventListener("change", function (event) {
  var box = event.target;
  if (!box.matches || !box.matches("input[data-select-all]")) {
    return;
  }
  var form = box.form;
  if (!form) {
    return;
  }
  form.querySelectorAll("input[name='" + box.dataset.selectAll + "']").forEach(function (other) {
    other.checked = box.checked;
  });
});
