"""``timbra dlq``: the dead-letter store from a terminal, through the public API (``/v1/ops``),
with an operator's staff key or the admin key.

    timbra dlq list [--status open|replayed|discarded] [--invoice INV] [--json]
    timbra dlq show ID
    timbra dlq replay ID [--payload-file FILE] [--note TEXT]
    timbra dlq discard ID --note TEXT

``--url`` (default ``$TIMBRA_URL`` or http://127.0.0.1:8080) and ``--key`` (default
``$TIMBRA_API_KEY``, else ``$TIMBRA_ADMIN_KEY``)."""

import argparse
import json
import os
import sys
from typing import Any

import httpx


def _client(args: argparse.Namespace) -> httpx.Client:
    key = args.key or os.environ.get("TIMBRA_API_KEY") or os.environ.get("TIMBRA_ADMIN_KEY")
    if not key:
        raise SystemExit("timbra dlq: falta la llave (--key, TIMBRA_API_KEY o TIMBRA_ADMIN_KEY)")
    return httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _answer(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text}
    if response.status_code >= 400:
        print(f"error {response.status_code}: {body.get('message')} ({body.get('code')})", file=sys.stderr)
        raise SystemExit(1)
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="timbra dlq", description="Mensajes muertos (timbra.dead_letter): listar, ver, reenviar, descartar.")
    parser.add_argument("--url", default=os.environ.get("TIMBRA_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--key", default=None)
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list")
    listing.add_argument("--status", choices=("open", "replayed", "discarded"), default="open")
    listing.add_argument("--invoice", default=None)
    listing.add_argument("--json", action="store_true")
    show = sub.add_parser("show")
    show.add_argument("id")
    replay = sub.add_parser("replay", help="republish on the original topic (or a corrected payload from a file)")
    replay.add_argument("id")
    replay.add_argument("--payload-file", default=None)
    replay.add_argument("--note", default=None)
    discard = sub.add_parser("discard")
    discard.add_argument("id")
    discard.add_argument("--note", required=True)
    args = parser.parse_args(argv)
    with _client(args) as http:
        if args.action == "list":
            params = {"status": args.status, **({"invoice_id": args.invoice} if args.invoice else {})}
            rows = _answer(http.get("/v1/ops/dead-letters", params=params))["data"]
            if args.json:
                print(json.dumps(rows, indent=2, ensure_ascii=False))
            else:
                print(f"{len(rows)} mensaje(s) {args.status}")
                for r in rows:
                    print(f"{r['id']}  {r['received_at'][:19]}  {r['service']}  {r['original_topic']}  invoice={r.get('invoice_id') or '-'}  {r['error_type']}: {r['reason'][:120]}")
            return 0
        if args.action == "show":
            print(json.dumps(_answer(http.get(f"/v1/ops/dead-letters/{args.id}")), indent=2, ensure_ascii=False))
            return 0
        if args.action == "replay":
            body: dict[str, Any] = {"note": args.note}
            if args.payload_file:
                with open(args.payload_file, encoding="utf-8") as source:
                    body["payload"] = source.read()
            doc = _answer(http.post(f"/v1/ops/dead-letters/{args.id}/replay", json=body))
            print(f"reenviado a {doc['original_topic']} ({len(doc['replays'])} reenvío(s) en total)")
            return 0
        doc = _answer(http.post(f"/v1/ops/dead-letters/{args.id}/discard", json={"note": args.note}))
        print(f"descartado: {doc['id']}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
