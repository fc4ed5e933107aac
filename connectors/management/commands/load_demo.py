from django.core.management.base import BaseCommand

from connectors.demo import load_demo


class Command(BaseCommand):
    help = "Create the demo organization, a few drafts and its local dropzone connection (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        created = load_demo()
        if not created:
            self.stdout.write("Demo data already present.")
        for item in created:
            self.stdout.write(f"created {item}")
