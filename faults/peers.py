"""The drills' loopback peers, which now live in the testing kit (``testkit``): this module
keeps their old names importable for code written against it.

* :class:`MediaServer` (``testkit.media_server``) serves ``tests/data`` files at
  ``/m/{token}/{behaviour}/{file}``; the behaviour is part of the URL, so each job
  carries its own fault.
* :class:`WebhookReceiver` (``testkit.webhook_receiver``) records every delivery
  (headers, body, what it answered, whether the Standard Webhooks signature verified) in
  memory and in a JSONL file.
* :class:`ModelProxy` (``testkit.model_proxy``) forwards to the real model server,
  answering 500 or 503 to a share of the chunks, or not listening at all while it is
  "down".
* :class:`LoadBalancer` (``testkit.balancer``) spreads TCP connections over the
  transcriber replicas and skips a replica that refuses the connection.
"""

from testkit.balancer import LoadBalancer
from testkit.data import DATA
from testkit.media_server import SIX_TO_FOUR_METADATA_URL, MediaLog, MediaServer
from testkit.model_proxy import ModelProxy
from testkit.ports import free_port
from testkit.rawhttp import HttpServer, Request, reset_connection, write_response
from testkit.webhook_receiver import Delivery, WebhookReceiver

__all__ = [
    "DATA",
    "SIX_TO_FOUR_METADATA_URL",
    "Delivery",
    "HttpServer",
    "LoadBalancer",
    "MediaLog",
    "MediaServer",
    "ModelProxy",
    "Request",
    "WebhookReceiver",
    "free_port",
    "reset_connection",
    "write_response",
]
