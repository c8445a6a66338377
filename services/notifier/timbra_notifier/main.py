"""Wiring of the notifier (and nothing else)."""

from timbra_notifier.adapters.mailer import SmtpConfig, SmtpMailer
from timbra_notifier.adapters.renderer import WeasyprintRenderer
from timbra_notifier.adapters.repository import DocumentRepository
from timbra_notifier.api import build_api
from timbra_notifier.handlers import build_router
from timbra_notifier.service import NotifierService
from timbra_shared.runtime import Runtime

SERVICE = "notifier"


def create():  # noqa: ANN201
    runtime = Runtime(SERVICE)
    settings = runtime.settings
    repo = DocumentRepository(runtime.store.db)
    mailer = SmtpMailer(SmtpConfig(host=settings.smtp_host, port=settings.smtp_port, sender=settings.smtp_sender))
    service = NotifierService(store=runtime.store, repo=repo, renderer=WeasyprintRenderer(), mailer=mailer)
    runtime.on_startup(repo.ensure_indexes)
    runtime.include(build_router(service))
    return runtime, runtime.app([build_api(repo)])


def main() -> None:
    runtime, app = create()
    runtime.serve(app)


if __name__ == "__main__":
    main()
