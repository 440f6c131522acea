# syntax=docker/dockerfile:1
# Affinity Gateway: a slim, non-root image. Build: docker build -t affinity-gateway .
# Run:  docker run -p 12000:12000 -v $PWD/config.yaml:/etc/affinity-gateway/config.yaml:ro \
#         -e OPENAI_API_KEY -e ANTHROPIC_API_KEY affinity-gateway
# (every $VAR the config names must be set: the repository's config.yaml names both keys)
ARG PYTHON_VERSION=3.11

# --- build: install the package and its dependencies into a virtualenv --------------------
FROM python:${PYTHON_VERSION}-slim AS build
# Install extras, e.g. --build-arg EXTRAS=tracing for OpenTelemetry traces (off by default).
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, so code edits reuse the cached dependency layer.
COPY pyproject.toml README.md ./
RUN mkdir gateway && touch gateway/__init__.py \
    && pip install ".${EXTRAS:+[$EXTRAS]}" \
    && pip uninstall --yes affinity-gateway
COPY gateway ./gateway
RUN pip install --no-deps . \
    && python -m compileall -q /opt/venv

# --- runtime: the virtualenv only; no compilers, no pip cache, no sources ------------------
FROM python:${PYTHON_VERSION}-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 12000
# For plain docker and Compose (Kubernetes uses its own probes): the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:12000/healthz', timeout=2)"]
# Config is mounted here (ConfigMap in Kubernetes); $VARs in it come from the environment.
ENTRYPOINT ["affinity-gateway"]
CMD ["serve", "--config", "/etc/affinity-gateway/config.yaml", "--host", "0.0.0.0", "--port", "12000"]
