"""The serving core without HTTP (check -> route -> score -> record), and /predict as an
ordinary FastAPI route: middleware a user adds wraps it, on a real uvicorn server."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest

from lifecycle.serving.core import PredictionService, load_variants
from lifecycle.serving.deploy import single
from lifecycle.serving.registry import Registry, RegistryError
from tests.helpers_process import free_port
from tests.helpers_serving import registry_ids


@pytest.fixture
def service(bundle: Path, tmp_path: Path):
    deployment = single(bundle)
    with Registry(f"sqlite:///{tmp_path / 'registry.sqlite'}") as registry:
        yield PredictionService(deployment, load_variants(deployment), registry)


def test_the_core_checks_scores_and_records_without_http(service, rows):
    url = service.registry.url
    result = service.submit_sync(rows[:5])
    assert result.ok and result.recorded and len(result.answers) == 5
    assert {a["request_id"] for a in result.answers} == registry_ids(url)
    assert all(a["prediction"] in ("Yes", "No") for a in result.answers)

    # all or nothing by default: one bad record, nothing scored or recorded
    bad = {**rows[5], "internet_service": None}
    refused = service.submit_sync([rows[6], bad])
    assert refused.answers == [None, None] and not refused.recorded
    assert refused.errors == [{"index": 1, "field": "internet_service",
                               "type": "missing_required",
                               "msg": "missing_required:internet_service"}]
    assert len(registry_ids(url)) == 5

    # partial: the good record is answered and recorded, the bad one refused with its reason
    partial = service.submit_sync([rows[6], bad], partial=True)
    assert partial.answers[0] is not None and partial.answers[1] is None
    assert [e["field"] for e in partial.errors] == ["internet_service"]
    assert partial.answers[0]["request_id"] in registry_ids(url)

    # a caller's own ids (an event id): a repeated one is refused by the registry
    mine = service.submit_sync(rows[7:9], request_ids=["evt-1", "evt-2"])
    assert [a["request_id"] for a in mine.answers] == ["evt-1", "evt-2"]
    with pytest.raises(RegistryError):
        service.submit_sync(rows[7:8], request_ids=["evt-1"])


def test_requests_arriving_together_share_one_onnx_run(service, rows):
    async def together():
        return await asyncio.gather(*(service.submit([r]) for r in rows[:16]))

    batcher = service._batchers["main"]
    before = batcher.calls
    results = asyncio.run(together())
    assert batcher.calls == before + 1  # 16 requests, one check + ONNX run
    ids = {r.answers[0]["request_id"] for r in results}
    assert len(ids) == 16 and ids <= registry_ids(service.registry.url)


def test_predict_is_an_ordinary_route_that_user_middleware_wraps(service, rows):
    """CORS and a metrics-style pure ASGI middleware added by a user see /predict."""
    import uvicorn
    from fastapi.middleware.cors import CORSMiddleware

    from lifecycle.serving.app import create_app
    from lifecycle.serving.server import config

    app = create_app(service.deployment, service.variants, service.registry)
    seen: list[tuple[str, int]] = []

    class Count:  # what a Prometheus or tracing middleware does: wrap every request
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)

            async def sending(message):
                if message["type"] == "http.response.start":
                    seen.append((scope["path"], message["status"]))
                await send(message)

            await self.app(scope, receive, sending)

    app.add_middleware(Count)
    app.add_middleware(CORSMiddleware, allow_origins=["https://shop.example"],
                       allow_methods=["POST"], allow_headers=["content-type"])
    port = free_port()
    server = uvicorn.Server(config(app, port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        origin = {"Origin": "https://shop.example"}
        answer = httpx.post(f"{url}/predict", json=rows[0], headers=origin)
        assert answer.status_code == 200, answer.text
        assert answer.headers["access-control-allow-origin"] == "https://shop.example"
        preflight = httpx.options(f"{url}/predict", headers={
            **origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert preflight.status_code == 200
        assert ("/predict", 200) in seen
        assert answer.json()["request_id"] in registry_ids(service.registry.url)
    finally:
        server.should_exit = True
        thread.join(10)
