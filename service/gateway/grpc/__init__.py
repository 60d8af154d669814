"""The gateway's gRPC API (``clipsearch.v1.Search`` in ``service/rpc/search.proto``), served by
``clipsearch serve`` on ``grpc_port`` beside REST, by the same components with the same rules."""

from service.gateway.grpc.server import GrpcGateway, serve_grpc

__all__ = ["GrpcGateway", "serve_grpc"]
