"""The TensorRT-LLM target: checkpoints quantized on CPU, the engine build plan, its repository."""

# NGC's Triton + TensorRT-LLM container that compiles and serves the engines. The chart's
# values-gpu.yaml names the same tag (a chart test holds them equal).
TRTLLM_IMAGE = "nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3"
