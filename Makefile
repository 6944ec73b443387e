# The two commands of the README: `make demo` and `make test`. Each sets up what it needs:
# the virtual environment in .venv and, where missing, mosquitto (apt-get, when root).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint bench system-deps browser-deps postgres-deps venv clean

demo: $(STAMP) system-deps
	$(BIN)/meterlink demo $(DEMO_ARGS)

test: $(STAMP) system-deps browser-deps postgres-deps
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP) system-deps postgres-deps
	$(BIN)/python -m benchmarks.run_all

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "meterlink needs Python 3.11 (set PYTHON=python3.11)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "could not create the virtual environment: install python3-venv (apt-get install python3-venv)" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

system-deps:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing mosquitto (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto >/dev/null; \
	else \
	  echo "meterlink needs the mosquitto broker. Install it with:  sudo apt-get install mosquitto" >&2; exit 1; \
	fi

# the dashboard's browser tests drive Debian's headless chromium through chromedriver (selenium)
browser-deps:
	@if command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; }; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium and chromium-driver (apt-get), for the dashboard's browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; \
	else \
	  echo "the dashboard's browser tests need chromium. Install it with:  sudo apt-get install chromium chromium-driver" >&2; exit 1; \
	fi

# the PostgreSQL store's tests and benchmarks start their own throwaway server (meterlink/postgres.py)
# from Debian's binaries; the package is told not to make and start a cluster of its own
postgres-deps:
	@if ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing postgresql (apt-get), for the PostgreSQL store's tests"; \
	  mkdir -p /etc/postgresql-common/createcluster.d && \
	  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/meterlink.conf && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	else \
	  echo "the PostgreSQL store's tests need the server binaries. Install them with:  sudo apt-get install postgresql" >&2; exit 1; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
