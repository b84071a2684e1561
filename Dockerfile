# The IdP as a container: granian (make serve) behind your TLS proxy. Build: docker build -t idp .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    IDP_ENV=production IDP_LOG_FORMAT=json IDP_BIND=0.0.0.0:8000 IDP_TRUSTED_PROXIES=1 \
    IDP_VENV_BIN=/opt/venv/bin PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY requirements.txt .
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt

COPY idp.py config.py ./
COPY identity/ identity/
COPY templates/ templates/
COPY deploy/entrypoint.sh deploy/entrypoint.sh

# An unprivileged user; instance/ (SQLite, the dev secret) is unused with PostgreSQL.
RUN useradd --system --uid 10001 --home /app idp && mkdir -p instance certs && chown idp instance certs
USER idp
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1
CMD ["deploy/entrypoint.sh"]
