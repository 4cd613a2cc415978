"""Create the MLflow artifact bucket in MinIO/S3 if it is missing (compose's one-shot ``create-bucket``).

    python /opt/skilldistill/create_bucket.py mlflow

Endpoint and credentials come from the environment boto3 and MLflow read: ``MLFLOW_S3_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``. Retries while the object store starts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any


def ensure_bucket(client: Any, name: str) -> bool:
    """True when the bucket was created, False when it was already there."""
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if name in existing:
        return False
    client.create_bucket(Bucket=name)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bucket")
    parser.add_argument("--attempts", type=int, default=30)
    args = parser.parse_args(argv)
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL"))
    for attempt in range(1, args.attempts + 1):
        try:
            created = ensure_bucket(client, args.bucket)
        except Exception as exc:  # the endpoint is not up yet, or refuses: say so and retry
            print(f"attempt {attempt}: {exc}", file=sys.stderr)
            time.sleep(2)
            continue
        print(f"bucket {args.bucket}: {'created' if created else 'exists'}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
