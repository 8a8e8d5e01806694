# One image for every role (server, fit worker, agent); the compose file picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 FDIOT_HOME=/var/lib/fdiot
RUN apt-get update && apt-get install -y --no-install-recommends adb openssh-client \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY models ./models
COPY server ./server
COPY worker ./worker
COPY agent ./agent
COPY fdiot ./fdiot
COPY alembic ./alembic
ARG EXTRAS=agent
RUN pip install --no-cache-dir ".[${EXTRAS}]"
EXPOSE 8000
CMD ["fdiot", "--help"]
