# The contact_sync image: the Celery worker by default; the same image serves the API
# (`contact-sync api --host 0.0.0.0`) and runs migrations (`contact-sync migrate`).
# Build: docker build -f worker.Dockerfile -t contact-sync .

FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
# The versions CI tested (constraints.txt), not whatever is newest today.
RUN pip wheel --no-cache-dir -c constraints.txt --wheel-dir /wheels .

FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
USER app
WORKDIR /home/app
EXPOSE 8000 9100
# Healthy while the worker's consumer touches its heartbeat file (every 5 s, from its event
# loop, while connected to the broker). `celery inspect ping` needed remote control, which is
# off by default (README, "Security").
HEALTHCHECK --interval=30s --timeout=15s --start-period=20s --retries=3 \
    CMD contact-sync worker-health --max-age 60 || exit 1
CMD ["contact-sync", "worker", "--concurrency", "2", "--metrics-port", "9100", "--metrics-host", "0.0.0.0"]
