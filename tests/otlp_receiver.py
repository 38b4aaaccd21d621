#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""An OTLP receiver for the integration tests, on the official
opentelemetry-proto definitions: gRPC (grpcio) and HTTP/protobuf.

Prints one JSON line with its bound ports, then one JSON line per export
request it accepts: {"transport": "grpc"|"http", "signal": "metrics"|"logs",
"request": <the request as a dict, proto field names>}.
"""

import gzip
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)

LOCK = threading.Lock()


def emit(transport, signal, request):
    line = json.dumps(
        {
            "transport": transport,
            "signal": signal,
            "request": MessageToDict(request, preserving_proto_field_name=True),
        }
    )
    with LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):
        emit("grpc", "metrics", request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def Export(self, request, context):
        emit("grpc", "logs", request)
        return logs_service_pb2.ExportLogsServiceResponse()


ROUTES = {
    "/v1/metrics": (
        "metrics",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (
        "logs",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}


class Http(BaseHTTPRequestHandler):
    def do_POST(self):
        route = ROUTES.get(self.path)
        if route is None:
            self.send_error(404)
            return
        signal, request_type, response_type = route
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.headers.get("Content-Type") != "application/x-protobuf":
            self.send_error(415)
            return
        request = request_type()
        request.ParseFromString(body)
        emit("http", signal, request)
        out = response_type().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), Http)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    with LOCK:
        print(json.dumps({"grpc_port": grpc_port, "http_port": http.server_address[1]}), flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
