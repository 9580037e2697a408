"""Inference backends of moge2_ros: exact ONNX export, ONNX Runtime, and PyTorch runtime options.

* :mod:`.onnx_export` — ``export_onnx``: ONNX with the official I/O whose outputs equal eager PyTorch (validated);
* :mod:`.onnx_ops` — ``ExportOps``: the export variant of the model's size-dependent primitives;
* :mod:`.onnx_resize` — antialiased / bilinear / bicubic resizes as export-friendly tensor maths;
* :mod:`.onnx_runtime` — ``OnnxRuntimeBackend``: TensorRT / CUDA / CPU providers with logged fall-back;
* :mod:`.torch_options` — ``TorchOptions`` / ``TorchRunner``: token-grid-bucketed ``torch.compile``, CUDA graphs,
  channels-last, pinned memory;
* :mod:`.cli` — the ``moge2-ros export-onnx`` subcommand.

Backends call the model's own pieces (``MoGe2Model.grid_inputs`` / ``core`` / ``finish_outputs``); none
re-writes a part of the forward.  Submodules are imported explicitly (onnx / onnxruntime are optional dependencies).
"""
