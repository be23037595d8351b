"""One authenticated POST (validate a small serializer, insert one row) and one paginated GET."""

from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from bench.floor.models import Item


class ItemIn(serializers.Serializer):
    symbol = serializers.CharField(max_length=32)
    side = serializers.ChoiceField(choices=["buy", "sell"])
    qty = serializers.DecimalField(max_digits=28, decimal_places=10)
    limit_price = serializers.DecimalField(max_digits=28, decimal_places=10)
    client_order_id = serializers.CharField(max_length=64)


class ItemOut(serializers.Serializer):
    id = serializers.IntegerField()
    client_order_id = serializers.CharField()
    symbol = serializers.CharField()
    side = serializers.CharField()
    qty = serializers.DecimalField(max_digits=28, decimal_places=10)
    limit_price = serializers.DecimalField(max_digits=28, decimal_places=10)
    created_at = serializers.DateTimeField()


class PageQuery(serializers.Serializer):
    page = serializers.IntegerField(min_value=1, default=1)
    size = serializers.IntegerField(min_value=1, max_value=100, default=20)


class Items(APIView):
    def post(self, request):
        incoming = ItemIn(data=request.data)
        incoming.is_valid(raise_exception=True)
        item = Item.objects.create(user=request.user, **incoming.validated_data)
        return Response(ItemOut(item).data, status=status.HTTP_201_CREATED)

    def get(self, request):
        q = PageQuery(data=request.query_params)
        q.is_valid(raise_exception=True)
        page, size = q.validated_data["page"], q.validated_data["size"]
        rows = Item.objects.filter(user=request.user)
        total = rows.count()
        start = (page - 1) * size
        items = list(rows.order_by("-created_at", "-id")[start:start + size])
        return Response({"items": ItemOut(items, many=True).data, "total": total, "page": page, "size": size})
