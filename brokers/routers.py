from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """Paths work exactly as SPEC.md writes them (no trailing slash) and with one."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"
