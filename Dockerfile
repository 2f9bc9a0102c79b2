# One image for the worker and the API (docker-compose.yml picks the command).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY requirements.lock .
RUN pip install --no-cache-dir -r requirements.lock
COPY . .
RUN useradd --system --uid 10001 refunddesk && chown -R refunddesk /app
USER refunddesk
CMD ["python", "worker.py"]
