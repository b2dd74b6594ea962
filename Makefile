# Two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VERSION ?= 1.0
WEIGHTS ?= auto
SEED ?= 0
MODEL_STORE ?= model_store
MANAGEMENT_URL ?= http://127.0.0.1:8081
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install archive run stop test unit e2e check-java secrets admin \
        register promote rollback versions bench lint-containers compose-up compose-down \
        deploy undeploy k8s-secrets clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements/gateway.txt requirements/serve.txt requirements/dev.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.txt
	touch $@

check-java:
	@command -v java >/dev/null || { echo "Java 11+ is required by TorchServe. Install it, e.g.: sudo apt-get install -y openjdk-17-jre-headless" >&2; exit 1; }
	@java -version 2>&1 | awk -F'"' '/version/ { split($$2, v, "."); if (v[1] < 11) { print "Java " $$2 " is too old: TorchServe needs 11+ (apt-get install openjdk-17-jre-headless)" > "/dev/stderr"; exit 1 } }'

# Build model_store/resnet18-$(VERSION).mar (kept if it already exists).
archive: install
	@test -f $(MODEL_STORE)/resnet18-$(VERSION).mar || \
	  $(BIN)/python -m handler.archive --version $(VERSION) --weights $(WEIGHTS) --seed $(SEED) --export-path $(MODEL_STORE)

# A local JWT secret in an ignored file, made once.
run/jwt_secret:
	mkdir -p run && umask 077 && $(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(48))' > $@

secrets: install run/jwt_secret

run: check-java install archive run/jwt_secret
	JWT_SECRET="$${JWT_SECRET:-$$(cat run/jwt_secret)}" scripts/run-local.sh

# Model versions, straight to the management API on loopback (see README).
MODELCTL = $(BIN)/python -m gateway.modelctl --management-url $(MANAGEMENT_URL)
register: install
	$(MODELCTL) register resnet18-$(VERSION).mar
promote: install
	$(MODELCTL) promote $(VERSION)
rollback: install
	$(MODELCTL) rollback
versions: install
	$(MODELCTL) list

# Create (or reset) a local admin user; prints a generated password once.
admin: install
	$(BIN)/python -m gateway.users add-admin $(or $(ADMIN),admin)

stop:
	-pkill -f 'gunicorn --config $(CURDIR)/config/gunicorn.conf.py'
	-TMPDIR=$(CURDIR)/run/torchserve/tmp $(BIN)/torchserve --stop

test: check-java install
	$(BIN)/pytest -q tests

unit: install
	$(BIN)/pytest -q tests/unit

e2e: check-java install
	$(BIN)/pytest -q tests/e2e

clean:
	rm -rf run $(MODEL_STORE)/*.mar .pytest_cache
