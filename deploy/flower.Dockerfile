# Flower for the flower profile of docker-compose.yml, on the project's pinned Python image
# (the same digest as worker.Dockerfile) with Flower at a fixed version and Celery, kombu and
# redis at the versions CI tested (constraints.txt). Flower needs no project code.
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
COPY constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir -c /tmp/constraints.txt "flower==2.2.0" "celery[redis]" \
    && rm /tmp/constraints.txt
RUN useradd --create-home --uid 10001 flower
USER flower
WORKDIR /home/flower
EXPOSE 5555
# The broker (CELERY_BROKER_URL) and the login (FLOWER_BASIC_AUTH) come from the environment.
CMD ["celery", "flower", "--port=5555"]
