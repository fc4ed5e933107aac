"""Admin forms for ERP connections: secrets are write-only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.forms.fields import InvalidJSONInput

from .contract.mapping import text_problem, validate_mapping
from .crypto import Sealed, SecretDecryptionError, keep_typed, reveal, typed_back
from .models import ERPConnection
from .transports import TransportError
from .transports.base import pinned_lines
from .transports.ftps import pinned_digest
from .transports.ssh_keys import load_private_key, parse_public_key

SECRET_FIELDS = ("password", "private_key", "private_key_passphrase")


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders a value, not even the one just submitted."""

    def format_value(self, value: Any) -> None:
        return None


class MappingField(forms.JSONField):
    """json.loads recurses per level and raises a plain ValueError past 4300 digits; Django catches neither.

    A hostile mapping text (100,000 nested brackets) was a 500; it is a form error now.
    """

    def to_python(self, value: Any) -> Any:
        if self.disabled or not isinstance(value, str):
            return super().to_python(value)
        if (problem := text_problem(value)) is not None:
            raise forms.ValidationError(problem, code="invalid")
        try:
            return super().to_python(value)
        except ValueError as err:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from err

    def bound_data(self, data: Any, initial: Any) -> Any:
        if self.disabled or not isinstance(data, str):
            return super().bound_data(data, initial)
        if text_problem(data) is not None:
            return InvalidJSONInput(data)
        try:
            return super().bound_data(data, initial)
        except ValueError:
            return InvalidJSONInput(data)


class ERPConnectionForm(forms.ModelForm):
    """Secrets are never rendered back: an empty input keeps the stored value,
    a "clear" box removes it.  The help text says whether one is stored.

    A secret typed into a form that comes back with an error (another field
    was wrong) is kept as ciphertext in a hidden field, bound to this form and
    field for an hour, and used when the form is sent again with the input
    left empty: it is never silently dropped, and the page never holds it.
    """

    clear_password = forms.BooleanField(required=False, label="Clear the stored password")
    clear_private_key = forms.BooleanField(required=False, label="Clear the stored private key")
    clear_private_key_passphrase = forms.BooleanField(required=False, label="Clear the stored passphrase")
    kept_password = forms.CharField(required=False, widget=forms.HiddenInput)
    kept_private_key = forms.CharField(required=False, widget=forms.HiddenInput)
    kept_private_key_passphrase = forms.CharField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = ERPConnection
        fields = "__all__"
        field_classes = {"mapping": MappingField}
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
            clear = self.fields.get(f"clear_{name}")
            if clear is not None and not stored:
                clear.widget = forms.HiddenInput()  # nothing stored: nothing to clear
            if self._kept(name):
                field.help_text = ("What you typed before is kept (encrypted) and will be saved with this form; "
                                   "leave empty to use it, or type it again.")
            else:
                field.help_text = (
                    "A value is stored. Leave empty to keep it; type a new one to replace it."
                    if stored else "Nothing stored."
                )

    def clean_host_key(self) -> str:
        """Each pasted pin (one per line; several while a server rotates its key) must be one the transport
        can check: an OpenSSH public key line, or a certificate's SHA-256 fingerprint."""
        lines = pinned_lines(self.cleaned_data.get("host_key") or "")
        transport = self.data.get("transport") or self.instance.transport
        if len(lines) > 10 or any(len(line) > 4000 or any(ord(c) < 32 for c in line) for line in lines):
            raise forms.ValidationError("Paste at most ten keys, one per line.")
        for number, line in enumerate(lines, start=1):
            where = f"Line {number}: " if len(lines) > 1 else ""
            if transport == "sftp":
                try:
                    parse_public_key(line)
                except TransportError as err:
                    raise forms.ValidationError(where + err.message) from None
            elif transport == "ftps" and pinned_digest(line) is None:
                raise forms.ValidationError(where + "enter the certificate's SHA-256 fingerprint, as "
                                            "`openssl x509 -noout -fingerprint -sha256` prints it.")
        return "\n".join(lines)

    def clean_mapping(self) -> dict:
        mapping = self.cleaned_data.get("mapping")
        mapping = {} if mapping is None else mapping  # an empty field; [] or 0 are refused below
        problems = validate_mapping(mapping)
        if problems:
            raise forms.ValidationError(problems)
        return mapping

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        org, active = cleaned.get("organization"), cleaned.get("is_active")
        if org and active:
            other = ERPConnection.objects.filter(organization=org, is_active=True).exclude(pk=self.instance.pk).first()
            if other is not None:  # say which one: the constraint's own message cannot
                self.add_error("is_active", f"{org} already has an active connection: “{other.name}”. Deactivate "
                                            "it first (answers to what it delivered keep being read: it shows "
                                            "as draining), then activate this one.")
        for name in SECRET_FIELDS:
            if name not in self.fields:
                continue
            if not cleaned.get(name) and (kept := self._kept(name)):
                cleaned[name] = kept  # typed before a form error, kept encrypted in the page
            if cleaned.get(f"clear_{name}"):
                cleaned[name] = ""
            elif not cleaned.get(name) and self.instance.pk:
                cleaned[name] = getattr(self.instance, name)
        self._check_private_key(cleaned)
        return cleaned

    def _check_private_key(self, cleaned: dict[str, Any]) -> None:
        """A key typed (or a passphrase typed for the stored key) must open, with its passphrase: said now, not
        at the first test or poll.  The message names neither the key nor the passphrase."""
        key, passphrase = cleaned.get("private_key"), cleaned.get("private_key_passphrase")
        if not key or (isinstance(key, Sealed) and isinstance(passphrase, Sealed | None)):
            return  # nothing new to check
        try:
            load_private_key(reveal(key), reveal(passphrase))
        except SecretDecryptionError:
            pass  # a stored secret this installation cannot read: its own error shows where it is used
        except TransportError as err:
            self.add_error("private_key", f"This private key cannot be used: {err.message}.")

    # -- typed secrets kept across a form error ------------------------------------------------
    def _purpose(self, name: str) -> str:
        return f"connection-form:{self.instance.pk or 'new'}:{name}"

    def _kept(self, name: str) -> str | None:
        token = self.data.get(f"kept_{name}", "") if self.is_bound else ""
        return typed_back(token, purpose=self._purpose(name)) if token else None

    def full_clean(self) -> None:
        super().full_clean()
        if self.errors and self.is_bound:
            data = self.data.copy()  # the page shows the kept ciphertext, never what was typed
            for name in SECRET_FIELDS:
                typed = self.data.get(name, "")
                if name in self.fields and typed:
                    data[f"kept_{name}"] = keep_typed(typed, purpose=self._purpose(name))
                    text = "What you typed is kept (encrypted) and will be saved once the errors are fixed; " \
                           "leave this empty to use it."
                    self.fields[name].help_text = self[name].help_text = text  # BoundFields copy it when made
            self.data = data
