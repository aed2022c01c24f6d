"""temporal-executor: AI agents run durably on Temporal, driven by CloudEvents on a bus."""
