# syntax=docker/dockerfile:1
# Echoledger API / worker image. Build: docker build -t echoledger .
# The app is installed in editable mode from /srv/echoledger so that `echoledger migrate` finds
# alembic.ini and migrations/ next to the package.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /srv/echoledger
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN pip install --upgrade pip && pip install -e .

FROM python:3.11-slim-bookworm AS runtime
# libsndfile comes inside the soundfile wheel; no system audio libraries are needed.
RUN groupadd --system echoledger && useradd --system --gid echoledger --home /srv/echoledger echoledger \
    && mkdir -p /var/lib/echoledger && chown echoledger:echoledger /var/lib/echoledger
COPY --from=build /opt/venv /opt/venv
COPY --from=build /srv/echoledger /srv/echoledger
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ECHOLEDGER_DATA_DIR=/var/lib/echoledger \
    ECHOLEDGER_HOST=0.0.0.0 \
    ECHOLEDGER_PORT=8000
WORKDIR /srv/echoledger
USER echoledger
EXPOSE 8000
VOLUME ["/var/lib/echoledger"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["echoledger", "serve"]
