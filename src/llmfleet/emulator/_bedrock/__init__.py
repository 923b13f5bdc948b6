"""A local stand-in for Amazon Bedrock's batch inference job API and InvokeModel.

moto serves S3 but not Bedrock's invocation jobs; this serves the four job operations botocore
calls (``CreateModelInvocationJob``, ``GetModelInvocationJob``, ``ListModelInvocationJobs``,
``StopModelInvocationJob``) and bedrock-runtime's ``InvokeModel``, with the routes and shapes of
botocore's service models (``bedrock/2023-04-20``, ``bedrock-runtime/2023-09-30``), over S3
served by moto (``moto.server.ThreadedMotoServer``).
"""

from __future__ import annotations

from ._app import BedrockEmulator as BedrockEmulator
from ._app import build_bedrock_app as build_bedrock_app
from ._app import run_bedrock_emulator as run_bedrock_emulator
from ._config import ERRORED as ERRORED
from ._config import UNPROCESSED as UNPROCESSED
from ._config import BedrockConfig as BedrockConfig
from ._config import BedrockFault as BedrockFault
from ._config import JobInfo as JobInfo
from ._config import Operation as Operation

__all__ = [
    "ERRORED",
    "UNPROCESSED",
    "BedrockConfig",
    "BedrockEmulator",
    "BedrockFault",
    "JobInfo",
    "Operation",
    "build_bedrock_app",
    "run_bedrock_emulator",
]
