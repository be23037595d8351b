"""One factory per model."""

from __future__ import annotations

from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from brokers.models import BrokerAccount, SimQuote, TraderProfile


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
