"""A local webhook receiver for the README's walk-through: verifies each delivery's Standard Webhooks
signature with the `standardwebhooks` library, drops repeats by `webhook-id`, prints the event.

    WEBHOOK_SECRET=whsec_... .venv/bin/python scripts/webhook_receiver.py 8765

Answers 204 to a delivery that verifies, 400 to one that does not (tampered, too old, wrong secret).
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

seen: set[str] = set()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            event = Webhook(os.environ["WEBHOOK_SECRET"]).verify(body, dict(self.headers))
        except WebhookVerificationError as exc:
            print(f"REFUSED ({exc})", flush=True)
            self.send_response(400)
            self.end_headers()
            return
        msg_id = self.headers["webhook-id"]
        if msg_id in seen:
            print(f"repeat of {msg_id}, ignored", flush=True)
        else:
            seen.add(msg_id)
            order = event["data"]
            print(f"verified {event['type']} #{event['id']}: {order['side']} {order['qty']} {order['symbol']} "
                  f"filled {order['filled_qty']} ({order['status']})\n{json.dumps(event, indent=2)}", flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format, *args):  # noqa: A002
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8765
    print(f"listening on http://127.0.0.1:{port}/hook", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
