# Two commands: `make run` brings the whole system up, `make test` runs every test.
# Both create .venv and install the pinned versions of requirements.lock first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench lock clean test-system-deps browser

$(STAMP): requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	touch $(STAMP)

run: $(STAMP)
	$(PY) starter.py dev

test: $(STAMP) test-system-deps browser
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

# tests/test_tls.py puts Debian's nginx (package nginx-light: grpc_pass, mTLS) in front of
# the dev server. Installed here when missing and we are root with apt; otherwise say how
# (the test then skips, naming the package).
test-system-deps:
	@if ! command -v nginx >/dev/null 2>&1 && ! test -x /usr/sbin/nginx; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing nginx-light for the TLS test (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	      nginx-light >/dev/null \
	    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
	         apt-get install -y -q --no-install-recommends nginx-light >/dev/null; }; \
	  else \
	    echo "nginx is missing: run 'sudo apt-get install nginx-light' or tests/test_tls.py skips"; \
	  fi; \
	fi

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

# The console's browser tests drive Debian's chromium (Playwright's own browser download
# is not used). Installed when missing and running as root; otherwise those tests skip
# and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	      || echo "could not install chromium: the browser tests will skip"; \
	  else \
	    echo "chromium is missing and cannot be installed here (root and apt-get needed):" \
	      "the browser tests will skip"; \
	  fi; }

# Benchmarks print their figures; they assert nothing.
bench: $(STAMP)
	$(PY) bench/policy_simulate.py --generate 10000
	$(PY) bench/intake_load.py --requests 10000
	$(PY) bench/console_queue.py --cases 5000
	$(PY) bench/case_throughput.py --cases 300
	$(PY) bench/ack_latency.py --rate 5 --seconds 40
	$(PY) bench/worker_memory.py
	$(PY) bench/localstripe_store.py
	$(PY) bench/cli_exit_drill.py --calls 200
	$(PY) bench/incident_drain.py --charges 200

# Re-pin after editing requirements.in.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -r requirements.in
	.venv-lock/bin/pip freeze > requirements.lock
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
