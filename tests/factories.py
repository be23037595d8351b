"""One factory per model."""

from __future__ import annotations

from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from brokers.models import BrokerAccount, SimQuote, TraderProfile
from equity.models import Attempt, Order


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"trader{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pass-1234-word")


class BrokerAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BrokerAccount

    user = factory.SubFactory(UserFactory)
    asset_class = "crypto"
    exchange = "sim"
    environment = "paper"
    label = ""
    credentials = factory.LazyFunction(dict)


class TraderProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TraderProfile
        django_get_or_create = ("user",)

    user = factory.SubFactory(UserFactory)
    live_enabled = False


class SimQuoteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SimQuote
        django_get_or_create = ("asset_class", "symbol")

    asset_class = "crypto"
    symbol = "BTC/USD"
    price = Decimal("50000")


class OrderFactory(factory.django.DjangoModelFactory):
    """A placed order as the service stores it (attempt done, accepted at the broker)."""

    class Meta:
        model = Order

    user = factory.SubFactory(UserFactory)
    client_order_id = factory.Sequence(lambda n: f"order-{n}")
    request_fingerprint = "0" * 64
    attempt = Attempt.DONE
    attempt_started_at = factory.LazyFunction(timezone.now)
    submitted_at = factory.LazyAttribute(lambda o: o.attempt_started_at)
    asset_class = "crypto"
    exchange = "sim"
    environment = "paper"
    currency = "USD"
    symbol = "BTC/USD"
    side = "buy"
    order_type = "limit"
    time_in_force = "gtc"
    qty = Decimal("0.01")
    limit_price = Decimal("40000")
    broker_order_id = factory.Sequence(lambda n: f"broker-{n}")
    status = "accepted"
