"""Object stores: the options every ``s3://`` reader and writer opens s3fs with."""

from __future__ import annotations

import os
from typing import Any


def s3_options() -> dict[str, Any]:
    """s3fs options from the standard AWS variables (botocore reads the keys itself)."""
    options: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    return options
