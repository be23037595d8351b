"""The host's own endpoint: DRF with the host's defaults, untouched by the order apps."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView


class NewsletterSignup(serializers.Serializer):
    email = serializers.EmailField()
    weekly = serializers.BooleanField(default=True)


class NewsletterSignupView(APIView):
    @extend_schema(request=NewsletterSignup,
                   responses={201: inline_serializer("NewsletterSubscribed", {"subscribed": serializers.EmailField()})})
    def post(self, request):
        signup = NewsletterSignup(data=request.data)
        signup.is_valid(raise_exception=True)
        return Response({"subscribed": signup.validated_data["email"]}, status=201)
