"""The evidence a leak would leave, searched for every secret value.

`Evidence` records every API response of its clients and every log record (the `evidence`
fixture in conftest.py sets every logger to DEBUG, SQL included), and when asked reads every
audit row, every database table as stored, and every mail sent.
"""

from __future__ import annotations

import json
import logging

from django.core import mail
from django.db import connection
from rest_framework.test import APIClient

from audit.models import BrokerOrderEvent

PASSWORD = "pass-1234-word"  # tests.factories.UserFactory's


class RecordingClient(APIClient):
    """An APIClient that hands every response to the evidence."""

    def __init__(self, evidence: Evidence, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._evidence = evidence

    def request(self, **kwargs):
        response = super().request(**kwargs)
        self._evidence.responses.append(response)
        return response


class Evidence:
    def __init__(self, caplog):
        self._caplog = caplog
        self.secrets: dict[str, str] = {}
        self.responses: list = []

    def secret(self, name: str, value) -> None:
        assert value and len(str(value)) >= 8, f"{name}: too short to search for"
        self.secrets[name] = str(value)

    def client(self, user) -> RecordingClient:
        """A client logged in the way a mobile client is: through POST /api/auth/token.

        That one response carries the tokens by design, so it is the only one not searched.
        """
        pair = APIClient().post("/api/auth/token", {"username": user.username, "password": PASSWORD},
                                format="json").json()
        self.secret(f"{user.username}'s access token", pair["access"])
        self.secret(f"{user.username}'s refresh token", pair["refresh"])
        self.secret(f"{user.username}'s password", PASSWORD)
        client = RecordingClient(self)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
        client.user = user
        return client

    def _places(self):
        for resp in self.responses:
            where = f"response {resp.request['REQUEST_METHOD']} {resp.request['PATH_INFO']} {resp.status_code}"
            yield where, resp.content.decode("utf-8", "replace") + repr(sorted(resp.items()))
        formatter = logging.Formatter()
        for record in self._caplog.records:
            yield f"log {record.name} {record.levelname}", formatter.format(record) + repr(vars(record))
        yield "audit rows", json.dumps(list(BrokerOrderEvent.objects.values()), default=str, ensure_ascii=False)
        with connection.cursor() as cur:
            for table in connection.introspection.table_names():
                cur.execute(f'SELECT * FROM "{table}"')
                yield f"database table {table}", repr(cur.fetchall())
        for message in mail.outbox:
            yield "mail", message.subject + message.body + repr(message.alternatives)

    def leaks(self) -> list[str]:
        found = []
        for where, text in self._places():
            found += [f"{name} in {where}" for name, value in self.secrets.items() if value in text]
        return found

    def assert_no_leaks(self) -> None:
        assert len(self.responses) > 0 and len(self._caplog.records) > 0, "nothing was recorded"
        leaks = self.leaks()
        assert not leaks, "secrets leaked:\n" + "\n".join(leaks)
