"""gunicorn settings for production: `gunicorn idp:app` reads this file from the working
directory. Every value can be overridden on the command line or with GUNICORN_CMD_ARGS."""

import multiprocessing
import os
import shutil
import tempfile

# Sync workers, one per core: password hashing is CPU-bound, and gthread with keep-alive sent
# every connection to one worker in load tests here (../shared/notes/facts.md).
worker_class = "sync"
workers = int(os.environ.get("IDP_WORKERS", multiprocessing.cpu_count()))
bind = os.environ.get("IDP_BIND", "127.0.0.1:8000")
# TLS ends at the proxy in front; trust its X-Forwarded-Proto only from these addresses.
forwarded_allow_ips = os.environ.get("IDP_FORWARDED_ALLOW_IPS", "127.0.0.1")
timeout = 30
graceful_timeout = 20
# Application logs are JSON lines on stderr (IDP_LOG_FORMAT=json); gunicorn's own errors too.
accesslog = None
errorlog = "-"

# Prometheus: each worker writes its metrics to files in this directory and /metrics adds them
# up; set before the workers import prometheus_client. A directory made here is removed when
# gunicorn stops (one was left in /tmp at every start).
_own_metrics_dir = None
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    _own_metrics_dir = tempfile.mkdtemp(prefix="idp-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
