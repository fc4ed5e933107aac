"""The order domain: organizations and their B2B draft orders."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator, validate_email
from django.db import models
from django.db.models import Q

currency_validator = RegexValidator(
    r"^[A-Z]{3}$", "Enter a three-letter ISO 4217 currency code in capitals, such as EUR or USD."
)
country_validator = RegexValidator(
    r"^[A-Z]{2}$", "Enter a two-letter ISO 3166 country code in capitals, such as DE or FR."
)
positive_quantity = MinValueValidator(Decimal("0.001"), "Quantity must be greater than zero.")
non_negative_price = MinValueValidator(Decimal("0"), "Unit price cannot be negative.")

#: A bound on alert recipients per organization: a pasted list should not turn one alert into a mass mailing.
MAX_ALERT_EMAILS = 50


def split_addresses(raw: str) -> list[str]:
    """Comma, semicolon or newline separated addresses -> the non-empty ones, stripped, in order."""
    return [part.strip() for part in re.split(r"[,;\n]", raw or "") if part.strip()]


class Organization(models.Model):
    slug = models.SlugField(unique=True, help_text="Short name used in export file names, e.g. 'acme'.")
    name = models.CharField(max_length=200)
    # Staff see and act on an organization's rows only as its members (superusers see all).
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="organizations",
        help_text="Staff users who work on this organization's orders and ERP connections.",
    )
    alert_emails = models.TextField(
        "alert e-mails", blank=True,
        help_text="Who is told when this organization's ERP connection starts or stops failing: e-mail "
        "addresses separated by commas or new lines. The site's admins (ADMINS) are told as well.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        addresses = split_addresses(self.alert_emails)
        invalid = []
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                invalid.append(address)
        if invalid:
            raise ValidationError({"alert_emails": "Not an e-mail address: " + ", ".join(invalid[:5])
                                   + " (plain addresses such as ops@example.com, separated by commas or new lines)."})
        if len(addresses) > MAX_ALERT_EMAILS:
            raise ValidationError({"alert_emails": f"At most {MAX_ALERT_EMAILS} addresses; use a mailing list."})

    def alert_recipients(self) -> list[str]:
        """The valid addresses of ``alert_emails``, each once (rows saved without ``clean`` are read safely)."""
        seen: dict[str, str] = {}
        for address in split_addresses(self.alert_emails):
            try:
                validate_email(address)
            except ValidationError:
                continue  # a bad address must not cost the others their alert
            seen.setdefault(address.lower(), address)
        return list(seen.values())[:MAX_ALERT_EMAILS]


class DraftOrder(models.Model):
    class Status(models.TextChoices):
        NEW = "NEW", "New"
        APPROVED = "APPROVED", "Approved"
        PUSHED = "PUSHED", "Pushed to ERP"
        CONFIRMED = "CONFIRMED", "Confirmed by ERP"
        PUSH_FAILED = "PUSH_FAILED", "Push failed"
        REJECTED = "REJECTED", "Rejected by ERP"

    #: Staff may (re)push a draft from these statuses; the push makes it APPROVED.
    PUSHABLE = (Status.NEW, Status.PUSH_FAILED, Status.REJECTED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="drafts")
    order_number = models.CharField(max_length=100, help_text="The customer's purchase order number.")
    order_date = models.DateField()
    requested_delivery_date = models.DateField(null=True, blank=True)
    currency = models.CharField(max_length=3, default="EUR", validators=[currency_validator])
    customer_number = models.CharField(max_length=50)
    customer_name = models.CharField(max_length=200)
    ship_to_name = models.CharField(max_length=200, blank=True)
    ship_to_street = models.CharField(max_length=200, blank=True)
    ship_to_postal_code = models.CharField(max_length=20, blank=True)
    ship_to_city = models.CharField(max_length=100, blank=True)
    ship_to_country = models.CharField(max_length=2, blank=True, validators=[country_validator])
    notes = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.NEW, db_index=True)
    erp_order_id = models.CharField(
        "ERP reference", max_length=255, blank=True,
        help_text="The export file name once pushed; the ERP's order number once confirmed."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["organization", "order_number"])]

    def __str__(self) -> str:
        return f"{self.order_number} ({self.organization.slug})"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.requested_delivery_date and self.order_date and self.requested_delivery_date < self.order_date:
            errors["requested_delivery_date"] = "The requested delivery date cannot be before the order date."
        ship_to = [self.ship_to_name, self.ship_to_street, self.ship_to_postal_code, self.ship_to_city]
        if any(ship_to) and not (self.ship_to_name and self.ship_to_city and self.ship_to_country):
            errors["ship_to_name"] = "A ship-to address needs at least a name, a city and a country."
        if not self.order_number.strip():
            errors["order_number"] = "The order number cannot be blank."
        if errors:
            raise ValidationError(errors)

    @property
    def has_ship_to(self) -> bool:
        return bool(self.ship_to_name)


class DraftOrderLine(models.Model):
    draft = models.ForeignKey(DraftOrder, on_delete=models.CASCADE, related_name="lines")
    line_number = models.PositiveIntegerField(validators=[MinValueValidator(1, "Line numbers start at 1.")])
    sku = models.CharField("SKU", max_length=64)
    description = models.CharField(max_length=500, blank=True)
    quantity = models.DecimalField(max_digits=14, decimal_places=3, validators=[positive_quantity])
    unit_price = models.DecimalField(
        max_digits=14, decimal_places=4, null=True, blank=True, validators=[non_negative_price]
    )
    unit = models.CharField(max_length=10, default="PCE", help_text="UN/ECE unit code, e.g. PCE, KGM, MTR.")

    class Meta:
        ordering = ["draft", "line_number"]
        constraints = [
            models.UniqueConstraint(fields=["draft", "line_number"], name="draft_line_number_unique"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="draft_line_quantity_positive"),
            models.CheckConstraint(
                condition=Q(unit_price__isnull=True) | Q(unit_price__gte=0), name="draft_line_price_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.line_number}: {self.quantity} × {self.sku}"

    def clean(self) -> None:
        if not self.sku.strip():
            raise ValidationError({"sku": "The SKU cannot be blank."})
