"""NATS JetStream: the transport, its pull-consumer loops, watches and a readiness probe
(nats-py)."""
