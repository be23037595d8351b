from django.urls import re_path

from bench.floor.views import Items

urlpatterns = [re_path(r"^api/floor/items/?$", Items.as_view())]
