"""Wiring of the notifier (and nothing else)."""

from timbra_notifier.adapters.issuer_profile import IssuerProfileClient
from timbra_notifier.adapters.mailer import SmtpConfig, SmtpMailer
from timbra_notifier.adapters.renderer import WeasyprintRenderer
from timbra_notifier.adapters.repository import DocumentRepository
from timbra_notifier.adapters.webhook_repository import WebhookRepository
from timbra_notifier.api import build_api
from timbra_notifier.handlers import build_router
from timbra_notifier.service import NotifierService
from timbra_notifier.settings import NotifierSettings
from timbra_notifier.webhooks import HttpSender, WebhookService
from timbra_shared.runtime import Runtime

SERVICE = "notifier"


def create():  # noqa: ANN201
    runtime = Runtime(SERVICE)
    settings = runtime.settings
    own = NotifierSettings()
    repo = DocumentRepository(runtime.store.db)
    hooks_repo = WebhookRepository(runtime.store.db)
    mailer = SmtpMailer(SmtpConfig(host=settings.smtp_host, port=settings.smtp_port, sender=settings.smtp_sender))
    profiles = IssuerProfileClient(settings.service_urls.get("issuer-profile", "http://127.0.0.1:8101"), settings.internal_secret, smtp_ttl=own.smtp_cache_s)
    service = NotifierService(
        store=runtime.store, repo=repo, renderer=WeasyprintRenderer(), mailer=mailer, profiles=profiles,
        default_rendering=own.pdf_rendering, email_retry_base_s=own.email_retry_base_s, email_retry_window_s=own.email_retry_window_s,
    )
    webhooks = WebhookService(
        hooks_repo, HttpSender(), retry_base_s=own.webhook_retry_base_s, retry_window_s=own.webhook_retry_window_s, timeout_s=own.webhook_timeout_s,
        concurrency=own.webhook_concurrency, per_endpoint=own.webhook_per_endpoint, poll_s=own.worker_poll_s,
    )
    runtime.on_startup(repo.ensure_indexes)
    runtime.on_startup(hooks_repo.ensure_indexes)
    runtime.include(build_router(service, webhooks))
    runtime.background(webhooks.run)
    runtime.background(lambda: service.retry_emails_forever(own.worker_poll_s * 2))
    return runtime, runtime.app([build_api(service, webhooks, settings.internal_secret)])


def main() -> None:
    runtime, app = create()
    runtime.serve(app)


if __name__ == "__main__":
    main()
