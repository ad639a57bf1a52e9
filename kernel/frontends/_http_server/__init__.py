"""An HTTP/1.1 server for endpoints that answer requests with replies: the KServe REST app
(:mod:`kernel.frontends._http`), the metrics endpoint (:mod:`kernel.frontends._metrics`) and
third-party frontend plugins (through :mod:`kernel.frontends`) all serve through it.

It knows no endpoint: a :class:`RequestHandler` gets each :class:`HttpRequest` and answers a
:class:`Reply` or a :class:`StreamingReply`; :class:`HttpListener` accepts the connections.
"""

from kernel.frontends._http_server._listener import HttpListener as HttpListener
from kernel.frontends._http_server._types import HttpLimits as HttpLimits
from kernel.frontends._http_server._types import HttpRequest as HttpRequest
from kernel.frontends._http_server._types import Reply as Reply
from kernel.frontends._http_server._types import RequestHandler as RequestHandler
from kernel.frontends._http_server._types import StreamingReply as StreamingReply

__all__ = ["HttpLimits", "HttpListener", "HttpRequest", "Reply", "RequestHandler", "StreamingReply"]
