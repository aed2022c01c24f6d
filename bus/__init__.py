"""The bus layer: the transport protocol, the CloudEvents codec, outbound routing;
one sub-package per bus (kafka/, nats/)."""
