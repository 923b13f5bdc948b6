"""The Bedrock stand-in on the wire, as main's emulator pieces serve it: AWS's rest-json error
shape (the ``_wire.Dialect`` of ``_bedrock_routes``), SigV4-form credentials, faults through
the core's endpoints, the core's request log and counts. Real HTTP on 127.0.0.1 (urllib for
requests botocore would never send, botocore for the rest); no event loop needed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import botocore.config
import botocore.exceptions
import pytest

from llmfleet.emulator import BedrockConfig, BedrockEmulator, BedrockFault

from bedrock_env import MODEL, moto_url

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

pytestmark = [pytest.mark.timeout(60)]


@pytest.fixture
def emu() -> Iterator[BedrockEmulator]:
    emulator = BedrockEmulator(BedrockConfig(min_records=1), s3_url=moto_url())
    try:
        emulator.wait_started()
        yield emulator
    finally:
        emulator.close()


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: dict[str, Any]


def http(method: str, url: str, headers: dict[str, str] | None = None) -> Answer:
    """One raw request; an error status is an answer too. Header names lower-cased."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return Answer(response.status, headers, json.loads(response.read()))
    except urllib.error.HTTPError as error:
        headers = {k.lower(): v for k, v in error.headers.items()}
        return Answer(error.code, headers, json.loads(error.read()))


def runtime(emu: BedrockEmulator, **config: Any) -> Any:
    fields = emu.client_config()
    session = fields["session"]
    return session.create_client(
        "bedrock-runtime",
        region_name=fields["region"],
        endpoint_url=fields["runtime_endpoint_url"],
        **config,
    )


def invoke(client: Any, text: str = "hi") -> dict[str, Any]:
    body = (
        '{"anthropic_version": "bedrock-2023-05-31", "max_tokens": 16, '
        f'"messages": [{{"role": "user", "content": "{text}"}}]}}'
    )
    answer: dict[str, Any] = client.invoke_model(modelId=MODEL, body=body)
    return answer


def test_an_unsigned_request_is_refused_in_awss_shape(emu: BedrockEmulator) -> None:
    response = http("GET", f"{emu.url}/model-invocation-jobs")
    assert response.status == 403
    assert response.headers["x-amzn-errortype"] == "UnrecognizedClientException:"
    assert response.headers["x-amzn-requestid"]
    assert "security token" in response.body["message"]
    # Counted and recorded as a request to its operation all the same.
    assert emu.counts["ListModelInvocationJobs"] == 1
    (recorded,) = emu.requests
    assert recorded.endpoint == "bedrock_job_list"


def test_a_signature_for_another_region_is_refused(emu: BedrockEmulator) -> None:
    auth = (
        "AWS4-HMAC-SHA256 Credential=AKID/20260101/eu-west-1/bedrock/aws4_request, "
        "SignedHeaders=host, Signature=00"
    )
    response = http("GET", f"{emu.url}/model-invocation-jobs", {"authorization": auth})
    assert response.status == 403
    assert response.headers["x-amzn-errortype"] == "UnrecognizedClientException:"


def test_an_unknown_path_answers_unknown_operation(emu: BedrockEmulator) -> None:
    response = http("POST", f"{emu.url}/no-such-operation")
    assert response.status == 404
    assert response.headers["x-amzn-errortype"] == "UnknownOperationException:"
    assert response.headers["x-amzn-requestid"]
    (recorded,) = emu.requests
    assert (recorded.endpoint, recorded.path) == (None, "/no-such-operation")
    assert set(emu.counts.values()) == {0}


def test_botocore_reads_a_faults_code_status_and_message(emu: BedrockEmulator) -> None:
    emu.add_fault(
        BedrockFault("InvokeModel", status=503, code="ServiceUnavailableException", message="busy")
    )
    client = runtime(emu, config=botocore.config.Config(retries={"total_max_attempts": 1}))
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        invoke(client)
    error = caught.value.response
    assert error["Error"] == {"Code": "ServiceUnavailableException", "Message": "busy"}
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert error["ResponseMetadata"]["RequestId"]
    # The fault is spent: the next call is answered, and only it is billed.
    assert invoke(client)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert emu.counts["InvokeModel"] == 2
    assert [(e.route, e.result) for e in emu.ledger.entries] == [("direct", "succeeded")]


def test_a_validation_error_and_the_signature_kept_out_of_the_log(emu: BedrockEmulator) -> None:
    client = runtime(emu)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.invoke_model(modelId=MODEL, body=b"{not json")
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "not valid JSON" in caught.value.response["Error"]["Message"]
    (recorded,) = emu.requests
    assert recorded.headers["authorization"] == "[redacted]"
    assert recorded.endpoint == "bedrock_invoke"


def test_a_fault_takes_the_stand_ins_operations_only() -> None:
    with pytest.raises(ValueError, match="operation must be one of"):
        BedrockFault("messages")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="accept_then_drop applies"):
        BedrockFault("InvokeModel", "accept_then_drop")
    with pytest.raises(ValueError, match="status must be an HTTP error status"):
        BedrockFault("InvokeModel", status=200)
    assert BedrockFault("CreateModelInvocationJob").fault().endpoint == "bedrock_job_create"
