# syntax=docker/dockerfile:1.7
# The GPU encoder worker (build context: the repository root):
#   docker build -f deploy/docker/worker-gpu.Dockerfile -t clipsearch/worker-gpu:0.1.0 .
#
# The versions go together. onnxruntime-gpu 1.31.1 links CUDA 13 (libcudart.so.13, cuBLAS 13),
# cuDNN 9 and TensorRT 10 (libnvinfer.so.10, libnvonnxparser.so.10; read from the wheel's
# providers with readelf), so: a CUDA 13 runtime base with cuDNN, and TensorRT 10 built for
# CUDA 13 (tensorrt-cu13-libs 10.x: TensorRT 11 would not load). onnxruntime-gpu 1.26 and older
# target CUDA 12 instead: change CUDA_IMAGE and TENSORRT_LIBS together with ORT_GPU_VERSION.
# Python 3.11 is not in Ubuntu 24.04: uv installs a standalone CPython of the pinned version.
#
# Base images are exact tags; to pin by digest as well, pass the resolved references, e.g.
#   --build-arg CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04@sha256:<digest>
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.9.5

FROM ${UV_IMAGE} AS uv

FROM ${CUDA_IMAGE} AS build
ARG PYTHON_VERSION=3.11.14
ARG ORT_GPU_VERSION=1.31.1
ARG TENSORRT_LIBS=tensorrt-cu13-libs==10.16.1.11
ENV UV_PYTHON_INSTALL_DIR=/opt/python UV_LINK_MODE=copy UV_NO_CACHE=1 UV_COMPILE_BYTECODE=1
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install "${PYTHON_VERSION}" && uv venv --python "${PYTHON_VERSION}" /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clipsearch clipsearch
COPY service service
COPY indexer indexer
COPY models models
# onnxruntime-gpu provides the same `onnxruntime` module as onnxruntime: swap one for the other.
RUN rm -rf models/zoo \
 && uv pip install --python /opt/venv/bin/python . \
 && uv pip uninstall --python /opt/venv/bin/python onnxruntime \
 && uv pip install --python /opt/venv/bin/python "onnxruntime-gpu==${ORT_GPU_VERSION}" "${TENSORRT_LIBS}" \
 && /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

FROM ${CUDA_IMAGE} AS worker-gpu
ARG BUNDLE=models/zoo/photo
ENV PATH=/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/tensorrt_libs:${LD_LIBRARY_PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    CLIPSEARCH_DATA_DIR=/var/lib/clipsearch \
    CLIPSEARCH_BUNDLE=/opt/clipsearch/bundle \
    CLIPSEARCH_ENCODER__PROVIDER=auto \
    CLIPSEARCH_ENCODER__ENGINE_CACHE_DIR=/var/cache/clipsearch/trt \
    CLIPSEARCH_WORKER__HOST=0.0.0.0
RUN groupadd --system --gid 10001 clipsearch \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/clipsearch --no-create-home clipsearch \
 && install -d -o 10001 -g 10001 /var/lib/clipsearch /var/cache/clipsearch/trt
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker/probe.py /usr/local/bin/clipsearch-probe
COPY ${BUNDLE} /opt/clipsearch/bundle
USER 10001:10001
WORKDIR /var/lib/clipsearch
EXPOSE 50051 9100
# A TensorRT engine build on first start can take minutes: a long start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
  CMD ["clipsearch-probe", "worker"]
ENTRYPOINT ["clipsearch"]
CMD ["worker"]
