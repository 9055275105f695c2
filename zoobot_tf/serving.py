"""Clients for a zoobot-tf model served by TF Serving (REST and gRPC).

    from zoobot_tf.serving import RestClient
    client = RestClient("http://localhost:8501", model="zoobot")
    table = client.predict_table({"J1234": open("J1234.jpg", "rb").read()})

Requests carry encoded JPEG/PNG bytes (base64 in JSON for REST); the server decodes them inside the
exported graph. Responses become the same friendly table as local predictions
(:func:`zoobot_tf.predictions.friendly_table`), labelled with the export's metadata
(``GET /v1/models/<name>/metadata`` does not carry it, so pass ``metadata=`` from
``assets.extra/zoobot_metadata.json`` or let :meth:`RestClient.predict_table` take it from an export folder).

gRPC needs ``tensorflow-serving-api`` (installed with zoobot-tf).
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Mapping, Sequence

import numpy as np
import pandas as pd


def task_from_metadata(metadata: Mapping):
    """The :class:`~zoobot_tf.tasks.Task` an export's metadata describes (labels its outputs)."""
    from zoobot_tf.tasks import make_task

    if metadata.get("task_config"):
        return make_task(metadata["task_config"])
    # exports written before tasks were objects: the task's name plus its options
    return make_task(metadata["task"], schema=metadata.get("schema"), class_names=metadata.get("class_names"),
                     target_names=metadata.get("target_names"))


def rest_body(images: Sequence[bytes], signature: str = "serving_default") -> dict:
    """The JSON body of ``POST /v1/models/<name>:predict`` (row format, base64-encoded bytes)."""
    return {"signature_name": signature,
            "instances": [{"image_bytes": {"b64": base64.b64encode(b).decode("ascii")}} for b in images]}


def grpc_request(images: Sequence[bytes], model: str, signature: str = "serving_default",
                 version: int | None = None):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for encoded images."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))
    return request


def rows_to_arrays(predictions: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """TF Serving row-format predictions ([{output: value}, ...]) -> {output: array (batch, ...)}."""
    if not predictions:
        return {}
    if not isinstance(predictions[0], Mapping):  # a single unnamed output
        return {"output": np.asarray(predictions)}
    return {k: np.asarray([p[k] for p in predictions]) for k in predictions[0]}


def outputs_to_table(outputs: Mapping[str, np.ndarray], metadata: Mapping, ids: Sequence[str]) -> pd.DataFrame:
    """Server outputs for one request -> the prediction table (one deterministic sample per galaxy)."""
    task = task_from_metadata(metadata)
    values = np.asarray(outputs[task.output_name], dtype=np.float64)
    return task.table(list(ids), values[..., None])


class RestClient:
    """``POST /v1/models/<model>[/versions/<v>]:predict`` with encoded image bytes."""

    def __init__(self, url: str = "http://localhost:8501", model: str = "zoobot", version: int | None = None,
                 timeout: float = 60.0, metadata: Mapping | None = None):
        self.url = url.rstrip("/")
        self.model, self.version, self.timeout = model, version, timeout
        self.metadata = metadata

    @property
    def endpoint(self) -> str:
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.url}/v1/models/{self.model}{version}:predict"

    def predict(self, images: Sequence[bytes], signature: str = "serving_default") -> dict[str, np.ndarray]:
        data = json.dumps(rest_body(images, signature)).encode()
        request = urllib.request.Request(self.endpoint, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise RuntimeError(f"TF Serving answered {e.code} for {self.endpoint}: {detail}") from None
        return rows_to_arrays(body["predictions"])

    def predict_table(self, images: Mapping[str, bytes], batch_size: int = 32,
                      metadata: Mapping | None = None) -> pd.DataFrame:
        """{id_str: encoded bytes} -> friendly table, in batches."""
        metadata = metadata or self.metadata
        if metadata is None:
            raise ValueError("predict_table needs the export's metadata (assets.extra/zoobot_metadata.json).")
        ids = list(images)
        parts = []
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            parts.append(outputs_to_table(self.predict([images[i] for i in chunk]), metadata, chunk))
        return pd.concat(parts, ignore_index=True)


class GrpcClient:
    """TF Serving's gRPC ``PredictionService/Predict`` (port 8500)."""

    def __init__(self, target: str = "localhost:8500", model: str = "zoobot", version: int | None = None,
                 timeout: float = 60.0):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(target)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model, self.version, self.timeout = model, version, timeout

    def predict(self, images: Sequence[bytes], signature: str = "serving_default") -> dict[str, np.ndarray]:
        import tensorflow as tf

        response = self.stub.Predict(grpc_request(images, self.model, signature, self.version), self.timeout)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
