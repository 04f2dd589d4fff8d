"""Load for inventoryd: browse, look up, reserve and restock (one request per task).

faultline's LoadGenerator replaces ``wait_time`` with its own pacer (the rate
given to ``faultline init --rate``); the default below only matters when you
run ``locust -f locustfile.py`` by hand. A 409 (not enough stock) is a business
answer, not a failure.
"""

from __future__ import annotations

import random

from locust import FastHttpUser, constant_throughput, task

SKUS = [f"sku-{i}" for i in range(50)]


class InventoryUser(FastHttpUser):
    wait_time = constant_throughput(1)

    @task(4)
    def get_item(self) -> None:
        self.client.get(f"/items/{random.choice(SKUS)}", name="GET /items/{sku}")

    @task(3)
    def reserve(self) -> None:
        body = {"qty": random.randint(1, 3)}
        with self.client.post(
            f"/items/{random.choice(SKUS)}/reserve",
            json=body,
            name="POST /items/{sku}/reserve",
            catch_response=True,
        ) as resp:
            if resp.status_code in (200, 409):
                resp.success()
            else:
                resp.failure(f"status {resp.status_code}")

    @task(2)
    def restock(self) -> None:
        body = {"qty": random.randint(1, 5)}
        self.client.post(
            f"/items/{random.choice(SKUS)}/restock", json=body, name="POST /items/{sku}/restock"
        )

    @task(1)
    def list_items(self) -> None:
        self.client.get("/items", name="GET /items")
