# The MLflow tracking server: PostgreSQL backend store (psycopg2), S3/MinIO artifact store (boto3), the same
# MLflow as the clients (pins from constraints.txt; tests/test_infra.py checks they agree). Build from the
# repository root:
#   docker build -f infra/docker/mlflow.Dockerfile -t skilldistill-mlflow:3.17.2 .
FROM python:3.11-slim
RUN pip install --no-cache-dir mlflow==3.17.2 psycopg2-binary==2.9.13 boto3==1.44.8
COPY infra/docker/create_bucket.py /opt/skilldistill/create_bucket.py
RUN useradd --create-home --uid 1000 mlflow
USER mlflow
ENV PYTHONUNBUFFERED=1
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
