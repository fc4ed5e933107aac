from django.core.management.base import BaseCommand

from orderflow.demo import load_demo


class Command(BaseCommand):
    help = "Create the demo organization, its local dropzone connection and a few drafts (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        created = load_demo()
        if not created:
            self.stdout.write("Demo data already present.")
        for item in created:
            self.stdout.write(f"created {item}")
