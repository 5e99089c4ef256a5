# syntax=docker/dockerfile:1
# Echoledger API / worker image.
#   docker build -t echoledger .                                # spectral embedder only
#   docker build --build-arg WITH_OPENL3=1 -t echoledger-openl3 .  # + OpenL3 (CPU torch, weights)
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
# OpenL3: a CPU build of torch from PyTorch's index (PyPI's default is a multi-GB CUDA build),
# then the extra, then the weights (about 37 MB), fetched here because the service never
# downloads at run time. This step needs network access to PyPI, download.pytorch.org and
# github.com.
ARG WITH_OPENL3=0
ENV TORCH_HOME=/opt/torch
RUN if [ "$WITH_OPENL3" = "1" ]; then \
        pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
        && pip install -e ".[openl3]" \
        && python -m app.embedding.openl3 --fetch-weights \
        && chmod -R a+rX /opt/torch; \
    else mkdir -p /opt/torch; fi

FROM python:3.11-slim-bookworm AS runtime
# libsndfile comes inside the soundfile wheel; no system audio libraries are needed.
RUN groupadd --system echoledger && useradd --system --gid echoledger --home /srv/echoledger echoledger \
    && mkdir -p /var/lib/echoledger && chown echoledger:echoledger /var/lib/echoledger
COPY --from=build /opt/venv /opt/venv
COPY --from=build /srv/echoledger /srv/echoledger
COPY --from=build /opt/torch /opt/torch
ENV PATH=/opt/venv/bin:$PATH \
    TORCH_HOME=/opt/torch \
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
