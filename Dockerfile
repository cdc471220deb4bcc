# lesionseg service image: the lean install (ONNX Runtime, no PyTorch) from the wheel, running as non-root.
#   make container                    # podman, offline: a Debian root made by mmdebstrap, wheels from the host
#   docker build -t lesionseg .       # where a registry and the package index are reachable (make wheelhouse first)
#   docker run -p 8000:8000 lesionseg
# BASE is any Debian-like image with Python 3.11 and its venv module: the official python:3.11-slim where a
# registry is reachable, or `lesionseg-base:bookworm` that `make container` imports from mmdebstrap where not.
# wheelhouse/ (`make wheelhouse`) holds the lesionseg wheel and, for an offline build (PIP_NO_INDEX=true),
# every pinned dependency; elsewhere pip takes what it lacks from the index. tests/test_container.py builds
# and runs this with podman.
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG PIP_NO_INDEX=false
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LESIONSEG_HOST=0.0.0.0 \
    LESIONSEG_PORT=8000 \
    PATH=/opt/lesionseg/bin:$PATH
# psycopg: the review worklist on PostgreSQL (LESIONSEG_DATABASE_URL); SQLite needs nothing more. Mount a
# volume for LESIONSEG_STORAGE_DIR and an SQLite file, or they live only as long as the container. The wheels
# are mounted for this step, not copied: a copied folder would stay in the image's layers.
RUN --mount=type=bind,source=wheelhouse,target=/tmp/wheelhouse \
    --mount=type=bind,source=requirements-onnx.txt,target=/tmp/requirements-onnx.txt \
    python3 -m venv /opt/lesionseg \
    && PIP_NO_INDEX=${PIP_NO_INDEX} pip install --find-links /tmp/wheelhouse -r /tmp/requirements-onnx.txt \
        "psycopg[binary]==3.3.9" lesionseg \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin lesionseg

USER lesionseg
WORKDIR /tmp
EXPOSE 8000
# Ready, not merely alive: the model loaded, its checksum verified and warmed up.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=4)"
# Several workers: add --workers N and set LESIONSEG_INFERENCE_THREADS to cores / N.
CMD ["lesionseg", "serve"]
