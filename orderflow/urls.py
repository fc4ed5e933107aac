from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

admin.site.site_header = "orderflow"
admin.site.site_title = "orderflow admin"
admin.site.index_title = "Orders and ERP connections"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
