// The ERP connection form shows the fields of the chosen transport only.
"use strict";
(function () {
  const ONLY = {
    // field -> transports that use it
    port: ["sftp", "ftp", "ftps"],
    username: ["sftp", "ftp", "ftps"],
    host_key: ["sftp", "ftps"],
    connect_timeout_seconds: ["sftp", "ftp", "ftps"],
    operation_timeout_seconds: ["sftp", "ftp", "ftps"],
    password: ["sftp", "ftp", "ftps"],
    clear_password: ["sftp", "ftp", "ftps"],
    private_key: ["sftp"],
    clear_private_key: ["sftp"],
    private_key_passphrase: ["sftp"],
    clear_private_key_passphrase: ["sftp"],
    client_public_key: ["sftp"],
    upload_channels: ["sftp"],
  };
  const HOST_LABEL = {
    local: "Sub-directory (inside the operator's LOCAL_DROPZONE_ROOT; optional)",
    default: "Host",
  };
  const PIN_LABEL = { sftp: "Host key (pinned)", ftps: "Certificate fingerprint (pinned)" };

  function row(name) {
    const input = document.getElementById("id_" + name) || document.querySelector(".field-" + name);
    return input ? input.closest(".form-row, .fieldBox") : null;
  }

  function label(name, text) {
    const el = document.querySelector('label[for="id_' + name + '"]');
    if (el && text) el.textContent = text + ":";
  }

  function apply() {
    const select = document.getElementById("id_transport");
    if (!select) return;
    const kind = select.value;
    for (const [name, kinds] of Object.entries(ONLY)) {
      const r = row(name);
      if (r) r.style.display = kinds.includes(kind) ? "" : "none";
    }
    label("host", HOST_LABEL[kind] || HOST_LABEL.default);
    label("host_key", PIN_LABEL[kind]);
    // A fieldset with nothing left to show disappears too (Credentials for a local directory).
    document.querySelectorAll("fieldset.module").forEach(function (fs) {
      const rows = fs.querySelectorAll(".form-row");
      if (!rows.length) return;
      const visible = Array.from(rows).some((r) => r.style.display !== "none" && !r.classList.contains("hidden"));
      fs.style.display = visible ? "" : "none";
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const select = document.getElementById("id_transport");
    if (select) select.addEventListener("change", apply);
    apply();
  });
})();
