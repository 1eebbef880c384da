"""An S3-compatible server on loopback for the tests: moto's server (the real HTTP protocol, so s3fs,
zarr and Ray workers in other processes all talk to it as to a bucket), plus a switch that makes
chosen PUTs fail the way a real object store refuses them.

    with S3Server() as s3:
        s3.create_bucket("b")
        run_encode(EncodeConfig(..., sink=SinkSpec(output="s3://b/run", storage_options=s3.storage_options)))
        s3.refuse_puts("shard-000002.tar")       # later PUTs of that key: 403 AccessDenied

Nothing here reaches the network: the server binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

KEY, SECRET, REGION = "testing-key", "testing-secret", "us-east-1"

_ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied (refused by the test's fault switch)</Message></Error>"
)


class _Faults:
    """WSGI middleware in front of moto: counts PUTs per key, refuses those whose key ends with a
    refused suffix. 403 AccessDenied is what a bucket policy or a revoked credential gives; clients
    (botocore, s3fs) do not retry it, so every refused PUT counted here is one attempt of ours."""

    def __init__(self, app):
        self.app = app
        self.refused: set[str] = set()
        self.puts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") == "PUT":
            with self.lock:
                self.puts[path] += 1
                refuse = any(path.endswith(suffix) for suffix in self.refused)
            if refuse:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                if length:
                    environ["wsgi.input"].read(length)  # drain the body, as a server does
                start_response(
                    "403 Forbidden",
                    [("Content-Type", "application/xml"), ("Content-Length", str(len(_ACCESS_DENIED)))],
                )
                return [_ACCESS_DENIED]
        return self.app(environ, start_response)


class S3Server:
    """moto's S3 on 127.0.0.1:<free port>, in a thread of this process."""

    def __init__(self):
        from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self.faults = _Faults(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            "127.0.0.1", 0, self.faults, threaded=True, request_handler=MotoRequestHandler
        )
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-s3", daemon=True)

    def __enter__(self) -> S3Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._thread.join()

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for this server: they travel to the Ray workers with the run's config."""
        return {
            "key": KEY,
            "secret": SECRET,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": REGION},
        }

    def filesystem(self):
        """A fresh s3fs filesystem (no listing cache shared with the code under test)."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **self.storage_options)

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name=REGION,
        ).create_bucket(Bucket=name)

    def refuse_puts(self, key_suffix: str) -> None:
        with self.faults.lock:
            self.faults.refused.add(key_suffix)

    def allow_puts(self) -> None:
        with self.faults.lock:
            self.faults.refused.clear()

    def put_count(self, key_suffix: str) -> int:
        with self.faults.lock:
            return sum(n for path, n in self.faults.puts.items() if path.endswith(key_suffix))
