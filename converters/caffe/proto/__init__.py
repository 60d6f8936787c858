"""Caffe's protobuf schema (BVLC field numbers), compiled into caffe_pb2 by regen.sh."""
