"""Kafka: the transport, its consumer-group loop, offsets and watches (aiokafka)."""
