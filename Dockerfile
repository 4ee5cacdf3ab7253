FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway_core gateway_core
COPY gateway_client gateway_client
COPY tasks tasks
COPY workers workers
COPY gateway_http gateway_http
COPY config config
COPY l04 l04
RUN pip install --no-cache-dir .
RUN useradd --create-home l04
USER l04
ENTRYPOINT ["l04"]
