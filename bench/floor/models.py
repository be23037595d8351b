from django.conf import settings
from django.db import models


class Item(models.Model):
    """One row per POST: about the size of an order request."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    client_order_id = models.CharField(max_length=64)
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4)
    qty = models.DecimalField(max_digits=28, decimal_places=10)
    limit_price = models.DecimalField(max_digits=28, decimal_places=10)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["user", "-created_at"], name="floor_item_list_idx")]

    def __str__(self) -> str:
        return f"{self.client_order_id} {self.side} {self.qty} {self.symbol}"
