"""The encoder worker's gRPC contract: the proto, its generated stubs, the wire codec and the one
ErrorType <-> status-code table. Depends on ``service.core`` only, so the worker (server side) and
``service.clients`` (client side) share it without depending on each other."""
