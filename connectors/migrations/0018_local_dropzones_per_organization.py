"""Local dropzones move into their organization's directory of LOCAL_DROPZONE_ROOT (issue 18).

A local connection's host was a sub-directory of the root; it is now a sub-directory of
root/<organization slug>.  A host that already named the organization's directory (the demo's "demo",
"acme/erp" for organization acme) is rewritten to keep resolving to the same place; any other local
connection's files now belong under root/<slug>/<host>: the operator moves them (listed here).
"""

from django.db import migrations, models


def into_organization_directories(apps, schema_editor):
    connection_model = apps.get_model("connectors", "ERPConnection")
    to_move = []
    for conn in connection_model.objects.filter(transport="local").select_related("organization"):
        slug = conn.organization.slug
        parts = [p for p in conn.host.split("/") if p not in ("", ".")]
        if parts[:1] == [slug]:
            connection_model.objects.filter(pk=conn.pk).update(host="/".join(parts[1:]))
        else:
            to_move.append(f"connection {conn.pk} ({conn.name}): move <root>/{'/'.join(parts)} to "
                           f"<root>/{slug}/{'/'.join(parts)}".replace("//", "/"))
    if to_move:
        print("\n  Local dropzones now live in their organization's directory of LOCAL_DROPZONE_ROOT:\n    "
              + "\n    ".join(to_move))


class Migration(migrations.Migration):
    dependencies = [("connectors", "0017_observability")]

    operations = [
        migrations.AlterField(
            model_name="erpconnection",
            name="host",
            field=models.CharField(
                blank=True, max_length=255,
                help_text="SFTP/FTP/FTPS: the server's name or address. Local: a sub-directory of the organization's "
                          "directory of the operator's LOCAL_DROPZONE_ROOT (optional); every path below is taken "
                          "inside it."),
        ),
        migrations.RunPython(into_organization_directories, migrations.RunPython.noop),
    ]
