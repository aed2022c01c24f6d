"""What bounds a worker's memory besides its imports: the workflow cache and the slots."""

from temporalio.client import Client

from temporal_executor.schemas.config import Settings, WorkerSettings
from temporal_executor.worker.service import build_activities, build_worker


async def test_the_worker_takes_its_cache_and_slots_from_config(temporal_client: Client) -> None:
    settings = Settings()
    settings.llm.providers = []
    settings.worker = WorkerSettings(
        max_cached_workflows=7, max_concurrent_workflow_tasks=5, max_concurrent_activities=3
    )
    activities, _, _ = build_activities(settings)

    config = build_worker(temporal_client, settings, activities).config()

    assert config.get("max_cached_workflows") == 7
    assert config.get("max_concurrent_workflow_tasks") == 5
    assert config.get("max_concurrent_activities") == 3
