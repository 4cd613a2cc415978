# The gRPC skill-tagging service (`skilltagger serve`), CPU. Build from the repository root:
#   docker build -f infra/docker/tagger.Dockerfile -t skilldistill-tagger:0.1.0 .
# Its own image (not one image for every service): the tagger and the profiler have different dependency
# closures and lifecycles, and the profiler's image comes from BentoML (`python infra/build_bento.py
# --containerize`), whose layout and entrypoint a shared Dockerfile could not reproduce.
# The LLM backend (`--backend openai`) talks to a separate `vllm serve` (see infra/compose.yaml); the
# embedding backend runs here on the packaged all-MiniLM-L6-v2 (no download).

# -- wheels of the project's distributions the tagger needs (tests/test_infra.py checks this list)
FROM python:3.11-slim AS wheels
WORKDIR /src
COPY packages/skillcore packages/skillcore
COPY packages/distill packages/distill
COPY packages/skilltag packages/skilltag
COPY packages/skillworld packages/skillworld
COPY services/tagger services/tagger
RUN pip wheel --no-cache-dir --no-deps -w /wheels \
      packages/skillcore packages/distill packages/skilltag packages/skillworld services/tagger

# -- runtime: the wheels, their dependencies pinned by the repository's constraints (the tested CPU stack;
#    torch's +cpu build comes from the PyTorch CPU index)
FROM python:3.11-slim
COPY constraints.txt /tmp/constraints.txt
COPY --from=wheels /wheels /tmp/wheels
RUN pip install --no-cache-dir -c /tmp/constraints.txt --extra-index-url https://download.pytorch.org/whl/cpu \
      /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels /tmp/constraints.txt
COPY infra/docker/grpc_health_check.py /opt/skilldistill/grpc_health_check.py
RUN useradd --create-home --uid 1000 tagger && mkdir -p /cache /data && chown tagger:tagger /cache
USER tagger
ENV HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SKILLTAG_CACHE_DIR=/home/tagger/.cache/skilltag
# the embedding backend's default encoder runs an int8 ONNX export of the packaged model: built here, once,
# instead of on the first request of every container
RUN python -c "from skilltag.encoders import ensure_export; ensure_export(precision='int8')"
VOLUME /cache
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/opt/skilldistill/grpc_health_check.py", "127.0.0.1:50051"]
CMD ["skilltagger", "serve", "--host", "0.0.0.0", "--port", "50051", "--tree", "world", "--cache", "/cache/tag-cache.sqlite"]
