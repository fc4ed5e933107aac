"""ERP connections, the exports delivered through them, and their event timeline."""

from __future__ import annotations

import posixpath
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from orderflow.models import DraftOrder, Organization

from .crypto import EncryptedTextField, Sealed
from .endpoints import SECRET_FIELDS, endpoint_digest
from .services import tenancy
from .transports import TRANSPORT_CHOICES, ErrorCode, TransportError, TransportSettings, default_port
from .transports.base import pinned_lines

REMOTE_KINDS = ("sftp", "ftp", "ftps")


class ERPConnection(models.Model):
    """How one organization's ERP dropzone is reached (at most one active per organization)."""

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="erp_connections")
    name = models.CharField(max_length=100)
    transport = models.CharField(max_length=10, choices=TRANSPORT_CHOICES, default="sftp")
    host = models.CharField(
        max_length=255, blank=True,
        help_text="SFTP/FTP/FTPS: the server's name or address. Local: a sub-directory of the organization's "
        "directory of the operator's LOCAL_DROPZONE_ROOT (optional); every path below is taken inside it.",
    )
    port = models.PositiveIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(65535)], help_text="Empty: the protocol's default."
    )
    username = models.CharField(max_length=150, blank=True)
    password = EncryptedTextField(blank=True)
    private_key = EncryptedTextField(blank=True, help_text="OpenSSH or PEM private key (ed25519, RSA, ECDSA).")
    private_key_passphrase = EncryptedTextField(blank=True)
    # The public half of a key pair generated here ("Generate key pair"): what to send to the ERP's admin.
    client_public_key = models.TextField(blank=True, editable=False)
    host_key = models.TextField(
        blank=True,
        help_text="The pinned server identity: an OpenSSH public key line for SFTP, a SHA256 certificate "
        "fingerprint for FTPS. Use 'Test connection' to see and pin it. While the server rotates its key, pin "
        "both, one per line; remove the old one once the rotation is done.",
    )
    export_path = models.CharField(max_length=500, default="/inbound")
    ack_path = models.CharField(max_length=500, default="/outbound")
    processed_path = models.CharField(
        max_length=500, blank=True, help_text="Empty: the ack dir's processed/ sub-directory."
    )
    failed_path = models.CharField(max_length=500, blank=True, help_text="Empty: the ack dir's failed/ sub-directory.")
    temp_suffix = models.CharField(max_length=20, default=".tmp")
    # Added to every answer's wait (our clock starts at first sight): 5 s keeps a 10 s interval's answers
    # within 15 s and is ample for an ERP that writes temp + rename, as the contract asks.
    min_ack_age_seconds = models.PositiveIntegerField(
        default=5, help_text="An ack file is read once orderflow has seen it unchanged (size and time) this long. "
                             "Raise it for an ERP that writes its files in place, slowly.")
    poll_interval_seconds = models.PositiveIntegerField(default=60, validators=[MinValueValidator(10)])
    connect_timeout_seconds = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(120)]
    )
    operation_timeout_seconds = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(600)]
    )
    max_attempts = models.PositiveIntegerField(
        default=8, validators=[MinValueValidator(1), MaxValueValidator(50)], help_text="Delivery attempts per export."
    )
    upload_channels = models.PositiveSmallIntegerField(
        default=4, validators=[MinValueValidator(1), MaxValueValidator(8)],
        help_text="SFTP: files moved at once over one connection (uploads, ack reads and moves; 1 = one after "
        "the other). More help over slow links (4 fill a 20 ms link ~5x better than one); the server's "
        "MaxSessions (OpenSSH: 10) is the limit.",
    )
    mapping = models.JSONField(default=dict, blank=True, help_text="Rewrites of the JSON v1 document (see docs).")
    is_active = models.BooleanField(default=False)
    # The endpoint (connectors/endpoints.py) the stored secrets were saved for; they go nowhere else.
    secrets_endpoint = models.CharField(max_length=64, blank=True, editable=False)
    last_poll_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_poll_ok = models.BooleanField(null=True, editable=False)
    # When a poll last worked: "seconds since the last successful poll" (/metrics) outlives failed polls.
    last_poll_ok_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_poll_message = models.TextField(blank=True, editable=False)
    next_poll_at = models.DateTimeField(null=True, blank=True, editable=False)
    # A poll claims the connection for a lease, and so does a delivery slice (docs/work-model.md): at most one
    # poll and one delivery of a connection are in flight, across every process on every machine.
    poll_claim_token = models.UUIDField(null=True, blank=True, editable=False)
    poll_claimed_until = models.DateTimeField(null=True, blank=True, editable=False)
    delivery_claim_token = models.UUIDField(null=True, blank=True, editable=False)
    delivery_claimed_until = models.DateTimeField(null=True, blank=True, editable=False)
    # When a poll last listed the ERP's inbox (our export dir): at most once a minute.
    inbox_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # name -> [size, mtime] of the ack files seen by the previous poll (to spot files still growing).
    ack_listing = models.JSONField(default=dict, blank=True, editable=False)
    # Health, as the pipeline last saw it: failed polls in a row, the code of the last fault ("" once an
    # operation works again), and our files still in the ERP's inbox (name -> first seen, our clock).
    poll_failures = models.PositiveIntegerField(default=0, editable=False)
    last_error_code = models.CharField(max_length=40, blank=True, editable=False)
    inbox_seen = models.JSONField(default=dict, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "ERP connection"
        ordering = ["organization__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization"], condition=Q(is_active=True), name="one_active_connection_per_org",
                violation_error_message="This organization already has an active ERP connection.",
            ),
            models.UniqueConstraint(fields=["organization", "name"], name="connection_name_unique_per_org"),
        ]
        permissions = [
            ("test_connection", "Can run a connection test (writes probe files)"),
            ("pin_host_key", "Can pin a server's host key or certificate"),
            ("run_now", "Can poll or deliver a connection now"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_transport_display()})"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.transport not in settings.ALLOWED_TRANSPORTS:
            allowed = ", ".join(settings.ALLOWED_TRANSPORTS)
            errors["transport"] = f"This installation allows only: {allowed} (ALLOWED_TRANSPORTS)."
        if self.transport in REMOTE_KINDS:
            if not self.host:
                errors["host"] = "A host is required for SFTP, FTP and FTPS."
            if not self.username:
                errors["username"] = "A user name is required for SFTP, FTP and FTPS."
        for field in ("export_path", "ack_path", "processed_path", "failed_path"):
            value = getattr(self, field)
            if value and (".." in value.split("/") or "\x00" in value):
                errors[field] = "The path may not contain '..' or NUL."
        if self.transport == "local" and (".." in self.host.split("/") or "\x00" in self.host):
            errors["host"] = "The sub-directory may not contain '..' or NUL: a local dropzone stays inside its " \
                             "organization's directory of LOCAL_DROPZONE_ROOT."
        if not self.temp_suffix.startswith(".") or "/" in self.temp_suffix:
            errors["temp_suffix"] = "The temp suffix must start with '.' and contain no '/', e.g. '.tmp'."
        for name in tenancy.outside_its_ack_dir(self):
            errors.setdefault(name, "Processed and failed answers stay inside the ack dir's tree: a directory "
                                    "below it, or empty for the default.")
        if not errors and self.organization_id and tenancy.clashes(self):
            errors["export_path"] = tenancy.CLASH[0].upper() + tenancy.CLASH[1:] + "."
        if errors:
            raise ValidationError(errors)

    @property
    def effective_port(self) -> int | None:
        return self.port or default_port(self.transport)

    @property
    def effective_processed_path(self) -> str:
        return self.processed_path or posixpath.join(self.ack_path, "processed")

    @property
    def effective_failed_path(self) -> str:
        return self.failed_path or posixpath.join(self.ack_path, "failed")

    def endpoint_digest(self) -> str:
        return endpoint_digest(transport=self.transport, host=self.host, port=self.effective_port,
                               username=self.username, host_key=self.host_key)

    def has_secrets(self) -> bool:
        return any(getattr(self, name) for name in SECRET_FIELDS)

    def save(self, *args: Any, **kwargs: Any) -> None:
        cleared = self._keep_secrets_with_their_endpoint()
        if not self.private_key and self.client_public_key:  # its private half is gone: the line means nothing
            self.client_public_key = ""
            cleared = [*cleared, "client_public_key"]
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            kwargs["update_fields"] = {*update_fields, "secrets_endpoint", *cleared}
        super().save(*args, **kwargs)

    def _keep_secrets_with_their_endpoint(self) -> list[str]:
        """Clear stored secrets not typed again when the endpoint changed; returns the fields cleared.

        A key the server itself presented, pinned through the test page (``pinned_from_server``) in addition
        to those pinned (the first pin) keeps them: the server they were typed for is still trusted.  Any other
        change of the pinned keys (a pasted line, a replaced or removed key), or of transport, host, port or
        user name, clears them: they go to no server an editor chose until someone types them again.
        """
        current = self.endpoint_digest()
        previous = self.secrets_endpoint
        if previous and previous != current and self.pk:
            stored_key = ERPConnection.objects.filter(pk=self.pk).values_list("host_key", flat=True).first() or ""
            only_keys_added = set(pinned_lines(stored_key)) <= set(pinned_lines(self.host_key)) and previous == (
                endpoint_digest(transport=self.transport, host=self.host, port=self.effective_port,
                                username=self.username, host_key=stored_key))
            only_keys_added = only_keys_added and getattr(self, "pinned_from_server", False)
            if not only_keys_added:
                cleared = [n for n in SECRET_FIELDS if isinstance(getattr(self, n), Sealed)]
                for name in cleared:
                    setattr(self, name, "")  # a private key gone takes its public line with it (save())
                self.secrets_cleared = cleared  # the admin tells the user to type them again
                self.secrets_endpoint = current
                return cleared
        self.secrets_endpoint = current
        return []

    def transport_settings(self) -> TransportSettings:
        """The plain settings a transport is built from: the one place stored secrets are decrypted.

        Raises :class:`~connectors.crypto.SecretDecryptionError` (naming no secret) when the
        configured keys cannot read one of this row's secrets.
        """
        from .crypto import reveal

        if self.transport not in settings.ALLOWED_TRANSPORTS:
            raise TransportError(f"{self.get_transport_display()} is not allowed here (ALLOWED_TRANSPORTS)",
                                 permanent=True, code=ErrorCode.CONFIG)
        if self.has_secrets() and self.secrets_endpoint not in ("", self.endpoint_digest()):  # "": loaded raw
            raise TransportError("the stored credentials were saved for another server, user or host key; "
                                 "type them again for this one", permanent=True, code=ErrorCode.CONFIG)
        if tenancy.clashes(self):  # a row written behind the form's back: nothing is sent there
            raise TransportError(f"stopped: {tenancy.CLASH}", permanent=True, code=ErrorCode.CONFIG)
        return TransportSettings(
            kind=self.transport,
            host=self.host,
            port=self.effective_port,
            username=self.username,
            password=reveal(self.password),
            private_key=reveal(self.private_key),
            private_key_passphrase=reveal(self.private_key_passphrase),
            host_key="\n".join(pinned_lines(self.host_key)),
            temp_suffix=self.temp_suffix,
            connect_timeout=float(self.connect_timeout_seconds),
            operation_timeout=float(self.operation_timeout_seconds),
            upload_channels=self.upload_channels,
            local_root=str(settings.LOCAL_DROPZONE_ROOT) if self.transport == "local" else "",
            local_tenant=self.organization.slug if self.transport == "local" else "",
        )


def ack_overdue_cutoff() -> datetime:
    """Exports SENT before this without an answer are overdue (ACK_OVERDUE_AFTER_MINUTES)."""
    return timezone.now() - timedelta(minutes=settings.ACK_OVERDUE_AFTER_MINUTES)


class ERPExportQuerySet(models.QuerySet):
    def ack_overdue(self) -> ERPExportQuerySet:
        return self.filter(status=ERPExport.Status.SENT, sent_at__lt=ack_overdue_cutoff())


class ERPExportManager(models.Manager.from_queryset(ERPExportQuerySet)):  # type: ignore[misc]
    def get_queryset(self) -> ERPExportQuerySet:
        # The file's bytes (KBs to MBs) load only where they are used: ``.defer(None)`` or on access.
        return super().get_queryset().defer("payload")


class ERPExport(models.Model):
    """One delivery of one draft; its id is the contract's ``export_id``.

    Its status is written only by ``connectors.services.lifecycle`` (the
    transition table lives there).  A draft's *current* export is its newest
    one: the draft's status follows it; older exports keep their own story.
    """

    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        SENT = "SENT", "Sent"
        ACKED = "ACKED", "Confirmed by ERP"
        FAILED = "FAILED", "Delivery failed"
        REJECTED = "REJECTED", "Rejected by ERP"
        CANCELLED = "CANCELLED", "Cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    draft = models.ForeignKey(DraftOrder, on_delete=models.PROTECT, related_name="exports")
    # Null while the organization has no active connection; assigned on activation.
    connection = models.ForeignKey(
        ERPConnection, on_delete=models.PROTECT, null=True, blank=True, related_name="exports"
    )
    # Indexed in Meta, not with db_index: on PostgreSQL db_index adds a second, LIKE-pattern index that no
    # query uses and every write of the row updates.
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    filename = models.CharField(max_length=255, blank=True)  # acks without export_id match by it
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_error = models.TextField(blank=True)
    # The frozen file: the exact bytes every attempt uploads, committed together with its name, sha256
    # and size before the first upload.  In the row, not in Django storage, so workers on any machine
    # and the admin read the same archive, and a crash never leaves an archive without its row.
    payload = models.BinaryField(null=True, blank=True, editable=False)
    payload_sha256 = models.CharField("SHA-256 of the file", max_length=64, blank=True)
    payload_size = models.PositiveIntegerField("size of the file (bytes)", null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    acked_at = models.DateTimeField(null=True, blank=True)
    erp_order_number = models.CharField("ERP order number", max_length=255, blank=True)
    ack_body = models.JSONField(null=True, blank=True)
    errors = models.JSONField(null=True, blank=True)
    # A delivery run claims the export for a lease; a dead worker's claim expires.
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    claimed_until = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ERPExportManager()

    class Meta:
        verbose_name = "ERP export"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),  # also serves lookups by status alone
            models.Index(fields=["filename"], name="export_filename"),
            models.Index(fields=["draft", "-created_at"], name="export_current_by_draft"),
            # A run finds its claimed exports by token: without it, a scan of every export ever made.
            models.Index(fields=["claim_token"], name="export_claimed", condition=models.Q(claim_token__isnull=False)),
        ]
        permissions = [
            ("push_draft", "Can push drafts to the ERP"),
            ("retry_export", "Can retry the delivery of an export"),
            ("cancel_export", "Can cancel an undelivered export"),
            ("record_answer", "Can record an ERP answer given out of band"),
            ("download_payload", "Can download export files and ERP answers"),
        ]

    def __str__(self) -> str:
        return self.filename or f"export {str(self.id)[:8]}"

    @property
    def is_ack_overdue(self) -> bool:
        return self.status == self.Status.SENT and bool(self.sent_at) and self.sent_at < ack_overdue_cutoff()


class EngineProcess(models.Model):
    """One running dropzone engine (a ``qcluster`` process, docs/work-model.md): its heartbeat and its tallies.

    Written by the engine itself every few seconds; the admin's home page and the health checks read it.
    """

    name = models.CharField(max_length=200, unique=True)  # host:pid
    host = models.CharField(max_length=150)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)
    sessions = models.PositiveIntegerField(help_text="partner jobs it may run at once (CONNECTOR_SESSIONS)")
    busy = models.PositiveIntegerField(default=0, help_text="partner jobs in flight at its last heartbeat")
    polls = models.PositiveIntegerField(default=0)
    deliveries = models.PositiveIntegerField(default=0)
    cut_off = models.PositiveIntegerField(default=0, help_text="jobs cut off for exceeding their budget")
    # The engine's counters and duration histograms since it started (connectors/observability/tallies.py),
    # written with each heartbeat: /metrics in any web process adds up every engine on every machine.
    metrics = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        ordering = ["-seen_at"]

    def __str__(self) -> str:
        return self.name


class ConnectorEvent(models.Model):
    """The timeline an admin reads instead of server logs."""

    class Level(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    connection = models.ForeignKey(
        ERPConnection, on_delete=models.CASCADE, null=True, blank=True, related_name="events"
    )
    export = models.ForeignKey(ERPExport, on_delete=models.CASCADE, null=True, blank=True, related_name="events")
    kind = models.CharField(max_length=40)  # indexed in Meta (see ERPExport.status)
    # Who did it (a user name) when a person did; empty for the pipeline.
    actor = models.CharField(max_length=150, blank=True)
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    message = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["kind"], name="event_kind"), models.Index(fields=["level"], name="event_level")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.message[:80]}"


class AlertState(models.Model):
    """Whether one alert condition of a connection is on, so its start and its end are each mailed once.

    Written only by ``connectors.services.alerts``, with compare-and-set on ``version``: any number of
    clusters may run the alert schedule at once, and exactly one of them wins each change (and sends its mail).
    """

    class Condition(models.TextChoices):
        DELIVERY_FAILED = "delivery_failed", "Deliveries failing"
        HOST_KEY = "host_key", "Server identity not trusted"
        ACK_OVERDUE = "ack_overdue", "Acks overdue"
        POLL_FAILING = "poll_failing", "Polling failing"
        INBOX_STALE = "inbox_stale", "ERP not consuming files"
        # Not a condition: the row whose last_sent_at says when this connection's daily digest went out.
        DIGEST = "digest", "Daily digest"

    connection = models.ForeignKey(ERPConnection, on_delete=models.CASCADE, related_name="alert_states")
    condition = models.CharField(max_length=20, choices=Condition.choices)
    active = models.BooleanField(default=False)
    started_at = models.DateTimeField(null=True, blank=True)
    cleared_at = models.DateTimeField(null=True, blank=True)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    # The facts the last mail told (counts, the oldest case, the reason): the resolved mail and digest reuse them.
    details = models.JSONField(default=dict, blank=True)
    # Bumped by every change; a change applies only to the version it was decided on (compare-and-set).
    version = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["connection", "condition"]
        constraints = [
            models.UniqueConstraint(fields=["connection", "condition"], name="alert_state_unique_per_condition"),
        ]

    def __str__(self) -> str:
        return f"{self.connection}: {self.get_condition_display()} ({'on' if self.active else 'off'})"
