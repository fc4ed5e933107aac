"""Admin forms for ERP connections: secrets are write-only."""

from __future__ import annotations

from typing import Any

from django import forms

from .mapping import validate_mapping
from .models import ERPConnection

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
        for name in SECRET_FIELDS:
            field = self.fields[name]
            stored = bool(self.instance.pk and getattr(self.instance, name))
            field.required = False
            # Never put the stored secret into the page, not even in a textarea.
            self.initial[name] = ""
            field.help_text = (
                "A value is stored. Leave empty to keep it; type a new one to replace it."
                if stored else "Nothing stored."
            )

    def clean_mapping(self) -> dict:
        mapping = self.cleaned_data.get("mapping") or {}
        problems = validate_mapping(mapping)
        if problems:
            raise forms.ValidationError(problems)
        return mapping

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for name in SECRET_FIELDS:
            if cleaned.get(f"clear_{name}"):
                cleaned[name] = ""
            elif not cleaned.get(name) and self.instance.pk:
                cleaned[name] = getattr(self.instance, name)
        return cleaned
