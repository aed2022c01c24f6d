"""Creates the transport for a bus; the only place that knows which classes exist."""

from temporal_executor.bus.transport import Transport
from temporal_executor.schemas.config import BusSettings
from temporal_executor.schemas.task import BusName


def create_transport(bus: BusName, settings: BusSettings, *, max_in_flight: int = 64) -> Transport:
    if bus == "kafka":
        from temporal_executor.bus.kafka.transport import KafkaTransport

        return KafkaTransport(settings, max_in_flight=max_in_flight)
    from temporal_executor.bus.nats.transport import NatsTransport

    return NatsTransport(settings, max_in_flight=max_in_flight)


def enabled_buses(settings: BusSettings) -> list[BusName]:
    buses: list[BusName] = []
    if settings.kafka.enabled:
        buses.append("kafka")
    if settings.nats.enabled:
        buses.append("nats")
    return buses
