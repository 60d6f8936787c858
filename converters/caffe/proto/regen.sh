#!/bin/sh
# Regenerate caffe_pb2.py from caffe.proto. Run from anywhere; needs `protoc`
# (Debian: apt-get install protobuf-compiler; tested with libprotoc 3.21.12).
# Debian's protoc 3.21 output runs on protobuf 4.25 .. 7.x; grpcio-tools' newer protoc output
# would need protobuf >= 7.35 at run time, so prefer the system protoc.
set -eu
cd "$(dirname "$0")"
protoc --version
protoc --proto_path=. --python_out=. caffe.proto
echo "wrote $(pwd)/caffe_pb2.py"
