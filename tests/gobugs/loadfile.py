"""Load for the corpus' HTTP programs (`faultline observe --load tests/gobugs/loadfile.py`)."""

from locust import HttpUser, task


class Visitor(HttpUser):
    @task
    def index(self) -> None:
        self.client.get("/")
