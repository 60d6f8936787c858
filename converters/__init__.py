"""Model converters: Caffe <-> PyTorch (``converters.caffe``) and PyTorch -> ONNX (``converters.onnx``)."""
