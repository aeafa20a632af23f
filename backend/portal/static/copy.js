// Copy-to-clipboard for the issued key: the only script of the portal.
// Without JavaScript the button stays hidden and the key can be selected
// by hand.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    var field = document.getElementById(b.getAttribute("data-copy"));
    if (!field || !navigator.clipboard) {
      return;
    }
    b.hidden = false;
    b.addEventListener("click", function () {
      // An input's value, or a <pre>'s text (the integration snippets).
      var text = field.value !== undefined ? field.value : field.textContent;
      navigator.clipboard.writeText(text).then(function () {
        b.textContent = "Copied";
      }, function () {
        if (field.select) {
          field.select();
        }
        b.textContent = "Select and copy by hand";
      });
    });
  });
});
