"""NATS JetStream: the transport, its pull-consumer loops and watches (nats-py)."""
