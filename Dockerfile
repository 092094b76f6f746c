# Vigil's service image for docker compose (machines with a Docker engine).
FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY consumers ./consumers
COPY models ./models
COPY schemas ./schemas
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin vigil
# The service never needs root: it reads its configuration, models and frames, and talks
# to Kafka and its own metrics port.
USER 10001
ENTRYPOINT ["vigil"]
CMD ["run", "--config", "/etc/vigil/vigil.yaml"]
