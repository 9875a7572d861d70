"""An independent KServe V2 gRPC client for resnet-serve, used by test/v2-grpc.test.ts.

It compiles the project's src/grpc/inference.proto with grpc_tools.protoc (Python's own protobuf
and gRPC stacks, nothing from the Node side), then against a running server calls ServerReady,
ModelMetadata and ModelInfer twice: once with the encoded photo as a BYTES tensor, once with an
already preprocessed FP32 [1, 3, H, W] tensor read from a file, both in raw_input_contents and both
asking for the classification extension's top 5. It prints one JSON object on stdout.

Exit status 3 with a message on stderr means Python's grpc or grpc_tools is missing (the test
then skips); anything else non-zero is a failure.

    python3 grpc_client.py --port 9000 --model resnet50 --photo chelsea.jpg --fp32 tensor.bin
"""

import argparse
import json
import os
import struct
import sys
import tempfile

try:
    import grpc
    from grpc_tools import protoc
except ImportError as missing:  # pragma: no cover - depends on the machine
    print(f"python grpc is missing: {missing} (Debian: apt-get install python3-grpcio python3-grpc-tools)", file=sys.stderr)
    sys.exit(3)

PROTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "grpc", "inference.proto")
TOPK = 5


def compile_proto(out_dir):
    proto_dir, proto_file = os.path.split(os.path.normpath(PROTO))
    rc = protoc.main(["grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", proto_file])
    if rc != 0:
        raise SystemExit(f"protoc failed on {PROTO} (exit {rc})")
    sys.path.insert(0, out_dir)
    import inference_pb2  # noqa: E402  (generated just above)
    import inference_pb2_grpc  # noqa: E402

    return inference_pb2, inference_pb2_grpc


def length_prefixed(elements):
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def split_length_prefixed(raw):
    elements, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        elements.append(raw[offset : offset + length].decode("utf-8"))
        offset += length
    return elements


def top_indices(response):
    """Indices of the classification strings "value:index:label", best first."""
    output = response.outputs[0]
    assert output.datatype == "BYTES", output.datatype
    assert list(output.shape) == [1, TOPK], list(output.shape)
    return [int(s.split(":", 2)[1]) for s in split_length_prefixed(response.raw_output_contents[0])]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--photo", required=True)
    parser.add_argument("--fp32", required=True, help="one preprocessed image: float32 little-endian, C×H×W")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out_dir:
        pb2, pb2_grpc = compile_proto(out_dir)
        channel = grpc.insecure_channel(f"127.0.0.1:{args.port}", options=[("grpc.max_send_message_length", 64 << 20)])
        stub = pb2_grpc.GRPCInferenceServiceStub(channel)
        grpc.channel_ready_future(channel).result(timeout=30)

        ready = stub.ServerReady(pb2.ServerReadyRequest(), timeout=30).ready
        metadata = stub.ModelMetadata(pb2.ModelMetadataRequest(name=args.model), timeout=30)
        model_input = metadata.inputs[0]
        classification = pb2.InferParameter(int64_param=TOPK)
        output = pb2.ModelInferRequest.InferRequestedOutputTensor(name=metadata.outputs[0].name, parameters={"classification": classification})

        with open(args.photo, "rb") as f:
            photo = f.read()
        bytes_request = pb2.ModelInferRequest(
            model_name=args.model,
            id="python-bytes",
            inputs=[pb2.ModelInferRequest.InferInputTensor(name=model_input.name, datatype="BYTES", shape=[1])],
            outputs=[output],
            raw_input_contents=[length_prefixed([photo])],
        )
        bytes_response = stub.ModelInfer(bytes_request, timeout=60)

        with open(args.fp32, "rb") as f:
            tensor = f.read()
        item_shape = list(model_input.shape)[1:]
        fp32_request = pb2.ModelInferRequest(
            model_name=args.model,
            id="python-fp32",
            inputs=[pb2.ModelInferRequest.InferInputTensor(name=model_input.name, datatype="FP32", shape=[1] + item_shape)],
            outputs=[output],
            raw_input_contents=[tensor],
        )
        fp32_response = stub.ModelInfer(fp32_request, timeout=60)

        try:
            stub.ModelInfer(pb2.ModelInferRequest(model_name=args.model, inputs=[pb2.ModelInferRequest.InferInputTensor(name="nope", datatype="FP32", shape=[1])], raw_input_contents=[b""]), timeout=30)
            wrong_input_status = "OK"
        except grpc.RpcError as err:
            wrong_input_status = err.code().name

        print(
            json.dumps(
                {
                    "server_ready": ready,
                    "metadata": {
                        "name": metadata.name,
                        "versions": list(metadata.versions),
                        "platform": metadata.platform,
                        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in metadata.inputs],
                        "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in metadata.outputs],
                    },
                    "bytes": {"id": bytes_response.id, "model_version": bytes_response.model_version, "top5": top_indices(bytes_response)},
                    "fp32": {"id": fp32_response.id, "top5": top_indices(fp32_response)},
                    "wrong_input_status": wrong_input_status,
                }
            )
        )
        channel.close()


if __name__ == "__main__":
    main()
