"""Admin forms for ERP connections: secrets are write-only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from .mapping import validate_mapping
from .models import ERPConnection
from .transports import TransportError
from .transports.ftps import pinned_digest
from .transports.ssh_keys import parse_public_key

SECRET_FIELDS = ("password", "private_key", "private_key_passphrase")


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders a value, not even the one just submitted."""

    def format_value(self, value: Any) -> None:
        return None


class ERPConnectionForm(forms.ModelForm):
    """Secrets are never rendered back: an empty input keeps the stored value,
    a "clear" box removes it.  The help text says whether one is stored."""

    clear_password = forms.BooleanField(required=False, label="Clear the stored password")
    clear_private_key = forms.BooleanField(required=False, label="Clear the stored private key")
    clear_private_key_passphrase = forms.BooleanField(required=False, label="Clear the stored passphrase")

    class Meta:
        model = ERPConnection
        fields = "__all__"
        widgets = {
            "password": forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
            "private_key_passphrase": forms.PasswordInput(
                render_value=False, attrs={"autocomplete": "new-password"}
            ),
            "private_key": WriteOnlyTextarea(
                attrs={"rows": 4, "autocomplete": "off", "spellcheck": "false",
                       "placeholder": "-----BEGIN OPENSSH PRIVATE KEY-----"}
            ),
            "host_key": forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "transport" in self.fields:  # what the operator allows (ALLOWED_TRANSPORTS), and what it is now
            allowed = {*settings.ALLOWED_TRANSPORTS, self.instance.transport if self.instance.pk else ""}
            self.fields["transport"].choices = [c for c in self.fields["transport"].choices if c[0] in allowed]
        for name in SECRET_FIELDS:
            field = self.fields.get(name)
            if field is None:  # a view-only page has no secret fields at all
                continue
            stored = bool(self.instance.pk and getattr(self.instance, name))
            field.required = False
            # Never put the stored secret into the page, not even in a textarea.
            self.initial[name] = ""
            field.help_text = (
                "A value is stored. Leave empty to keep it; type a new one to replace it."
                if stored else "Nothing stored."
            )

    def clean_host_key(self) -> str:
        """A pasted pin must be what the transport can check: an OpenSSH key line, or a SHA-256 fingerprint."""
        value = " ".join((self.cleaned_data.get("host_key") or "").split())
        transport = self.data.get("transport") or self.instance.transport
        if not value:
            return value
        if len(value) > 4000 or any(ord(c) < 32 for c in value):
            raise forms.ValidationError("Paste one line.")
        if transport == "sftp":
            try:
                parse_public_key(value)
            except TransportError as err:
                raise forms.ValidationError(err.message) from None
        elif transport == "ftps" and pinned_digest(value) is None:
            raise forms.ValidationError("Enter the certificate's SHA-256 fingerprint, as "
                                        "`openssl x509 -noout -fingerprint -sha256` prints it.")
        return value

    def clean_mapping(self) -> dict:
        mapping = self.cleaned_data.get("mapping") or {}
        problems = validate_mapping(mapping)
        if problems:
            raise forms.ValidationError(problems)
        return mapping

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for name in SECRET_FIELDS:
            if name not in self.fields:
                continue
            if cleaned.get(f"clear_{name}"):
                cleaned[name] = ""
            elif not cleaned.get(name) and self.instance.pk:
                cleaned[name] = getattr(self.instance, name)
        return cleaned
