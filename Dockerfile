# sensorpipe's image: the bridge with the web UI (default command) and the publisher.
# Stage 1 fetches the front-end packages from npm with the lock file; stage 2 is a slim
# Python with the pinned dependencies, running as an unprivileged user.

FROM node:20-bookworm-slim AS assets
WORKDIR /build/webui
COPY webui/package.json webui/package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The reports' PDF: WeasyPrint needs Pango and a font.
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin sensorpipe
WORKDIR /app
COPY requirements.lock ./
RUN pip install -r requirements.lock
COPY common/ common/
COPY publisher/ publisher/
COPY bridge/ bridge/
COPY webui/ webui/
# The compose stack's init service (docker-compose.yml): its secrets and broker accounts.
COPY scripts/stack_init.py scripts/broker_user.py scripts/
COPY --from=assets /build/webui/node_modules/ webui/node_modules/
# The publisher's outbox; a named volume mounted here starts with this owner.
RUN mkdir /data && chown sensorpipe:sensorpipe /data
USER sensorpipe
ENV SENSORPIPE_WEB_HOST=0.0.0.0 \
    SENSORPIPE_OUTBOX=/data/outbox.sqlite
EXPOSE 5000
CMD ["python", "-m", "bridge"]
