"""Export for deployment: ``gateloop.export.onnx`` (the decoding step as ONNX; the ``[onnx]`` extra).

Nothing here is imported by ``import gateloop``.
"""
