# lesionseg service image: the lean install (ONNX Runtime, no PyTorch) from the wheel, running as non-root.
#   docker build -t lesionseg .
#   docker run -p 8000:8000 lesionseg
# The image holds what `pip install lesionseg-*.whl` gives: tests/test_wheel.py installs that same wheel
# with the same pins into a fresh environment and serves from it, since no container engine runs there.
FROM python:3.11-slim AS wheel
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LESIONSEG_HOST=0.0.0.0 \
    LESIONSEG_PORT=8000
COPY requirements-onnx.txt /tmp/
COPY --from=wheel /dist/ /tmp/dist/
# psycopg: the review worklist on PostgreSQL (LESIONSEG_DATABASE_URL); SQLite needs nothing more. Mount a
# volume for LESIONSEG_STORAGE_DIR and an SQLite file, or they live only as long as the container.
RUN pip install -r /tmp/requirements-onnx.txt "psycopg[binary]==3.3.9" /tmp/dist/lesionseg-*.whl \
    && rm -rf /tmp/dist /tmp/requirements-onnx.txt \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin lesionseg

USER lesionseg
WORKDIR /tmp
EXPOSE 8000
# Ready, not merely alive: the model loaded, its checksum verified and warmed up.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=4)"
# Several workers: add --workers N and set LESIONSEG_INFERENCE_THREADS to cores / N.
CMD ["lesionseg", "serve"]
