# Vigil's service image for docker compose (machines with a Docker engine).
FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY consumers ./consumers
COPY models ./models
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENTRYPOINT ["vigil"]
CMD ["run", "--config", "/etc/vigil/vigil.yaml"]
