# lesionseg service image: the embedded model inside, nothing downloaded at run time, runs as non-root.
#   docker build -t lesionseg .
#   docker run -p 8000:8000 lesionseg
# To shrink the image by ~4 GB, pass PyTorch's CPU-only wheel index as PIP_EXTRA_INDEX_URL at build time.
FROM python:3.11-slim

ARG PIP_EXTRA_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LESIONSEG_HOST=0.0.0.0 \
    LESIONSEG_PORT=8000

WORKDIR /app
COPY requirements.txt pyproject.toml README.md ./
RUN pip install -r requirements.txt
COPY src ./src
RUN pip install --no-deps . && rm -rf src \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin lesionseg

USER lesionseg
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
# Several workers: add --workers N and set LESIONSEG_INFERENCE_THREADS to cores / N.
CMD ["lesionseg", "serve"]
