"""Archived export files move from Django storage into their rows (ERPExport.payload becomes the bytes).

Run ``migrate`` where MEDIA_ROOT (or the STORAGES backend) still reaches the archived files.  A file
that is not found is reported; its export keeps its name and hash, and delivery refuses to rebuild a
frozen export without its bytes (it fails, saying so).  The files are deleted once the
rows are committed.  Reversible: going back writes the files again.
"""

from django.db import migrations, models, transaction

CHUNK = 200


def files_into_rows(apps, schema_editor):
    from django.core.files.storage import default_storage

    ERPExport = apps.get_model("connectors", "ERPExport")
    missing, moved = 0, []
    rows = ERPExport.objects.exclude(payload_file="").only("pk", "payload_file")
    for export in rows.iterator(chunk_size=CHUNK):
        name = export.payload_file.name
        try:
            with default_storage.open(name, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            missing += 1
            continue
        ERPExport.objects.filter(pk=export.pk).update(payload=data)
        moved.append(name)
    # Only once the bytes are committed: a migration that fails and rolls back must find its files again.
    transaction.on_commit(lambda: [default_storage.delete(name) for name in moved])
    if missing:
        print(f"\n  {missing} archived export file{' was' if missing == 1 else 's were'} not found in storage "
              "(MEDIA_ROOT/STORAGES); those exports keep their name and hash without their bytes.")


def rows_into_files(apps, schema_editor):
    from django.core.files.base import ContentFile

    ERPExport = apps.get_model("connectors", "ERPExport")
    for export in ERPExport.objects.exclude(payload=None).iterator(chunk_size=CHUNK):
        export.payload_file.save(export.filename or f"{export.pk}.json", ContentFile(bytes(export.payload)),
                                 save=False)
        ERPExport.objects.filter(pk=export.pk).update(payload_file=export.payload_file.name)


class Migration(migrations.Migration):

    dependencies = [
        ("connectors", "0011_poll_task"),
    ]

    operations = [
        migrations.RenameField(model_name="erpexport", old_name="payload", new_name="payload_file"),
        migrations.AddField(
            model_name="erpexport",
            name="payload",
            field=models.BinaryField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(files_into_rows, rows_into_files, elidable=False),
        migrations.RemoveField(model_name="erpexport", name="payload_file"),
    ]
