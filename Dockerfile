# meshlog server image: `docker build -t meshlog:0.1.0 .`, then
#   docker run -p 8080:8080 -e MESHLOG_URL=postgresql://app@db/events meshlog:0.1.0
# (listening on 0.0.0.0 needs an API token in the store, or `--insecure`: see docs/deploy.md).
#
# Two stages: the first builds meshlog's wheel and installs it with its server, postgres and nats extras into a
# virtualenv; the second copies only that virtualenv onto a fresh slim Python, so no compiler, pip cache or
# source tree ends up in the image. The base image is pinned to a patch release (pin its digest too, with
# `python:3.11.13-slim-bookworm@sha256:...`, where your registry policy asks for it).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/meshlog \
 && /opt/meshlog/bin/pip install "$(ls /wheels/meshlog-*.whl)[server,postgres,nats]"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="meshlog" \
      org.opencontainers.image.description="A durable, append-only event store for AI-agent systems" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/meshlog/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 meshlog \
 && useradd --system --uid 10001 --gid meshlog --home-dir /var/lib/meshlog --create-home --shell /usr/sbin/nologin meshlog
COPY --from=build /opt/meshlog /opt/meshlog
# The working directory is where the default store (sqlite:///./meshlog.db) lives when no URL is given.
WORKDIR /var/lib/meshlog
# A numeric user, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["meshlog", "serve", "--host", "0.0.0.0"]
CMD ["--port", "8080"]
