"""An MLServer runtime that serves an ONNX graph with ONNX Runtime: MLServer's serving stack
(adaptive batching, parallel workers) around the fastest CPU engine it can host, so the served
comparison measures the server, not a slow engine.

Threads per worker come from GPUCAP_PEER_THREADS (the bench script divides the cores among the
workers).
"""

import os

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self.settings)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("GPUCAP_PEER_THREADS", "1"))
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        # Every input by name and every output of the graph, as gpucap answers.
        feed = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        results = self._session.run(self._outputs, feed)
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(n, y) for n, y in zip(self._outputs, results)],
        )
