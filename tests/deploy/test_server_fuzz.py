"""The prediction server against its own OpenAPI schema (schemathesis): every operation with generated
parameters and bodies, including random multipart uploads, on a real uvicorn server on 127.0.0.1. The
property: no 5xx answer, every answer as its schema says, and the server still healthy afterwards."""
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
uvicorn = pytest.importorskip("uvicorn")

from hypothesis import HealthCheck, settings  # noqa: E402

from resnets import Predictor  # noqa: E402
from resnets.deploy.server import ServeConfig, create_app  # noqa: E402


APP = create_app(Predictor("resnet20_cifar10", mode="fused"), ServeConfig(max_upload_mb=0.05, max_files=4),
                 name="resnet20_cifar10")
schema = schemathesis.openapi.from_dict(APP.openapi())


@pytest.fixture(scope="module")
def server():
    """The app for the shipped ResNet-20 under uvicorn on a free loopback port (its batcher runs in the app's
    lifespan, as in ``resnets serve``); its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(APP, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=30)


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_schema_says(case, server):
    # An image is more than the schema can say (any bytes are a valid "binary" file): that random bytes are
    # refused with 415 is right, so the check that schema-valid data is accepted does not apply.
    from schemathesis.checks import positive_data_acceptance

    response = case.call_and_validate(base_url=server, excluded_checks=[positive_data_acceptance])
    assert response.status_code < 500


def test_the_server_is_healthy_after_the_fuzzing(server):
    import urllib.request

    with urllib.request.urlopen(f"{server}/health", timeout=10) as r:
        assert r.status == 200
