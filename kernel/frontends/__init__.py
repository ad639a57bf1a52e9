"""Protocol endpoints (HTTP/REST, gRPC, metrics) that translate wire formats to the server API."""
