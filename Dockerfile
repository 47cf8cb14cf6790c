# The sapo-monitor service: FastAPI + uvicorn, PostgreSQL or SQLite, no torch (the service never imports it).
#
#   docker build -t sapo-monitor .
#   docker run -e SAPO_MONITOR_DB=postgresql://user:pass@db:5432/sapo -p 8321:8321 sapo-monitor
#
# Two stages: wheels are built in the first, only the installed result lands in the second.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sapo_monitor ./sapo_monitor
COPY client ./client
COPY service ./service
COPY trainer ./trainer
COPY dashboards ./dashboards
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[service]"

FROM python:3.12-slim
# A fixed unprivileged user: the service needs no root for anything.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/sapo sapo
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "sapo-monitor[service]" \
    && rm -rf /wheels
USER sapo
WORKDIR /home/sapo

# Listen on every interface inside the container; auth is then required (tokens via
# `sapo-monitor token create`), the service refuses to start unauthenticated off loopback.
ENV PYTHONUNBUFFERED=1 \
    SAPO_MONITOR_HOST=0.0.0.0 \
    SAPO_MONITOR_PORT=8321 \
    SAPO_MONITOR_AUTH=on
EXPOSE 8321

# /healthz answers while the process is up; /readyz also checks the database (for load balancers).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SAPO_MONITOR_PORT', '8321'), timeout=2)"]

# Bring the schema to head, then serve (db upgrade is a no-op on a current database).
CMD ["sh", "-c", "sapo-monitor db upgrade && exec sapo-monitor serve"]
