from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from connectors.observability import views as observability

admin.site.site_header = "orderflow"
admin.site.site_title = "orderflow admin"
admin.site.index_title = "Orders and ERP connections"

urlpatterns = [
    path("admin/", admin.site.urls),
    # Answered first by connectors.observability.middleware (before the host check); here for reverse().
    path("healthz", observability.healthz, name="healthz"),
    path("readyz", observability.readyz, name="readyz"),
    path("metrics", observability.metrics, name="metrics"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
