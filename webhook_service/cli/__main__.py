"""`python -m webhook_service.cli ...`: the `webhook-service` command without the console script."""

from __future__ import annotations

from . import main

main()
