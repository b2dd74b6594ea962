# Two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VERSION ?= 1.0
WEIGHTS ?= auto
SEED ?= 0
VARIANT ?= fp32
ARCH ?= resnet18
MODEL_STORE ?= model_store
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install archive run stop test unit e2e fuzz check-java secrets admin \
        register promote rollback versions history verify-history canary shadow rollout-status rollout-promote \
        rollout-abort canary-status canary-promote canary-abort bench bench-overload bench-replicas bench-log bench-signing \
        lint-containers compose-up compose-down images test-deploy deploy deploy-check undeploy k8s-secrets clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/core.txt requirements/tracing.txt requirements/gateway.txt requirements/serve.txt requirements/dev.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps --editable .
	touch $@

check-java:
	@command -v java >/dev/null || { echo "Java 11+ is required by TorchServe. Install it, e.g.: sudo apt-get install -y openjdk-17-jre-headless" >&2; exit 1; }
	@java -version 2>&1 | awk -F'"' '/version/ { split($$2, v, "."); if (v[1] < 11) { print "Java " $$2 " is too old: TorchServe needs 11+ (apt-get install openjdk-17-jre-headless)" > "/dev/stderr"; exit 1 } }'

# Build model_store/classifier-$(VERSION).mar (kept if it already exists), signed with
# the local signing key (made once, ignored by git; docs/model-versions.md, "Signed archives").
SIGNING_DIR := run/model-signing
SIGNING_KEY := $(SIGNING_DIR)/signing-key.pem
archive: install $(SIGNING_KEY)
	@test -f $(MODEL_STORE)/classifier-$(VERSION).mar || \
	  $(BIN)/python -m modelbuild.archive --version $(VERSION) --weights $(WEIGHTS) --seed $(SEED) \
	    --variant $(VARIANT) --arch $(ARCH) --export-path $(MODEL_STORE) --signing-key $(SIGNING_KEY)
	@test -f $(MODEL_STORE)/classifier-$(VERSION).mar.sig || \
	  $(BIN)/python -m modelbuild.signing sign --key $(SIGNING_KEY) $(MODEL_STORE)/classifier-$(VERSION).mar

$(SIGNING_KEY): | install
	$(BIN)/python -m modelbuild.signing new-key $(SIGNING_DIR)

# The local token signing keys (gateway.identity.keys) in an ignored file, made once.
run/jwt-keys.json: | install
	$(BIN)/gateway-keys --file $@ ensure

secrets: install run/jwt-keys.json

# Local users live in an ignored copy of the shipped file (demo user only), so that
# `make admin` never writes an admin hash into a tracked file.
LOCAL_USERS := run/users.json
$(LOCAL_USERS):
	mkdir -p run && cp config/users.json $@

run: check-java install archive run/jwt-keys.json $(LOCAL_USERS)
	JWT_KEYS_FILE="$${JWT_KEYS_FILE:-run/jwt-keys.json}" USERS_FILE="$${USERS_FILE:-$(LOCAL_USERS)}" \
	  MODEL_TRUSTED_KEYS_FILE="$${MODEL_TRUSTED_KEYS_FILE:-$(SIGNING_DIR)/trusted-keys.pem}" \
	  scripts/run-local.sh

# Model versions: the declared state in the database (DATABASE_URL; make run's by
# default), which every replica's model agent follows (docs/model-versions.md).
MODELCTL = MODEL_TRUSTED_KEYS_FILE="$${MODEL_TRUSTED_KEYS_FILE:-$(SIGNING_DIR)/trusted-keys.pem}" \
  $(BIN)/modelctl
register: install
	$(MODELCTL) register classifier-$(VERSION).mar
promote: install
	$(MODELCTL) promote $(VERSION)
rollback: install
	$(MODELCTL) rollback $(if $(VERSION),--to $(VERSION))
versions: install
	$(MODELCTL) list
history: install
	$(MODELCTL) history
verify-history: install
	$(MODELCTL) verify-history

# Canary and shadow rollouts of VERSION (the gateway's database: DATABASE_URL; docs/rollouts.md).
# The canary-* names are the older ones, kept.
PERCENT ?= 10
canary: install
	$(MODELCTL) rollout $(VERSION) --mode canary --percent $(PERCENT) $(if $(STICKY),--sticky)
shadow: install
	$(MODELCTL) rollout $(VERSION) --mode shadow --percent $(PERCENT)
rollout-status canary-status: install
	$(MODELCTL) rollout-status
rollout-promote canary-promote: install
	$(MODELCTL) rollout-promote
rollout-abort canary-abort: install
	$(MODELCTL) rollout-abort

# Create (or reset) a local admin user; prints a generated password once.
admin: install $(LOCAL_USERS)
	$(BIN)/gateway-users --file $(LOCAL_USERS) add-admin $(or $(ADMIN),admin)

# ---- containers and Kubernetes -------------------------------------------------
SECRET = $(PYTHON) -c 'import secrets, sys; sys.stdout.write(secrets.token_urlsafe(48))'
IMAGE_WEIGHTS ?= imagenet
KUBECTL ?= kubectl
NAMESPACE := image-classifier
# docker when its daemon answers, else podman (scripts/container-engine.sh); evaluated on use.
ENGINE = $(shell scripts/container-engine.sh)
COMPOSE = $(if $(filter docker,$(ENGINE)),docker compose,$(BIN)/podman-compose)

# Both images, tagged as docker-compose.yaml and k8s/ expect; prints their sizes.
images:
	IMAGE_WEIGHTS=$(IMAGE_WEIGHTS) scripts/build-images.sh

# Compose secrets: an untracked .env with generated values (see .env.example).
.env:
	umask 077 && { echo "POSTGRES_PASSWORD=$$($(SECRET))"; \
	  echo "GRAFANA_PASSWORD=$$($(SECRET))"; \
	  echo "WEIGHTS=$(IMAGE_WEIGHTS)"; echo "USERS_FILE_HOST=./config/users.json"; } > $@

# Compose's token signing keys: secrets/ is private to you; the gateway's user (10001)
# reads the file inside the mounted directory.
COMPOSE_KEYS := secrets/jwt-keys/jwt-keys.json
$(COMPOSE_KEYS): | install
	mkdir -p -m 0700 secrets && mkdir -p -m 0755 secrets/jwt-keys
	$(BIN)/gateway-keys --file $@ ensure && chmod 0644 $@

# The archives' trusted keys for Compose: the public half of make archive's key, in a
# directory of its own (never the private key's), so that a rotation reaches the containers.
COMPOSE_TRUSTED_KEYS := secrets/model-signing/trusted-keys.pem
$(COMPOSE_TRUSTED_KEYS): $(SIGNING_KEY)
	mkdir -p -m 0700 secrets && mkdir -p -m 0755 secrets/model-signing
	cp $(SIGNING_DIR)/trusted-keys.pem $@ && chmod 0644 $@

compose-up: install .env $(COMPOSE_KEYS) $(COMPOSE_TRUSTED_KEYS)
	$(COMPOSE) up --build --detach $(if $(filter docker,$(ENGINE)),--wait)
	@echo "gateway: http://localhost:8000  ($(COMPOSE) ps; $(COMPOSE) logs -f gateway)"

compose-down: install
	$(COMPOSE) down

# The images, Compose and the Kubernetes pod specs run for real (tests/deploy).
test-deploy: install
	$(BIN)/pytest -q tests/deploy

# Kubernetes secrets: untracked files under k8s/secrets/ that kustomize turns into Secrets.
k8s-secrets: install
	mkdir -p k8s/secrets
	umask 077 && test -s k8s/secrets/jwt-secret || $(SECRET) > k8s/secrets/jwt-secret
	$(BIN)/gateway-keys --file k8s/secrets/jwt-keys.json ensure
	umask 077 && test -s k8s/secrets/postgres-password || $(SECRET) > k8s/secrets/postgres-password
	test -s k8s/secrets/users.json || cp config/users.json k8s/secrets/users.json
	$(MAKE) $(SIGNING_KEY)
	test -s k8s/secrets/model-trusted-keys.pem || cp $(SIGNING_DIR)/trusted-keys.pem k8s/secrets/model-trusted-keys.pem

deploy: k8s-secrets
	minikube image build -t image-classifier-serve:1.0 -f Dockerfile.serve --build-opt=build-arg=WEIGHTS=$(IMAGE_WEIGHTS) .
	minikube image build -t image-classifier-gateway:1.0 -f Dockerfile.gateway .
	$(KUBECTL) apply -k k8s/
	$(KUBECTL) -n $(NAMESPACE) rollout status statefulset/postgres --timeout=300s
	$(KUBECTL) -n $(NAMESPACE) rollout status deployment/redis --timeout=300s
	$(KUBECTL) -n $(NAMESPACE) rollout status deployment/serve --timeout=900s
	$(KUBECTL) -n $(NAMESPACE) rollout status deployment/gateway --timeout=300s
	minikube service -n $(NAMESPACE) gateway --url

# The /token -> /predict round trip through the cluster's NodePort (after make deploy).
deploy-check: install
	DEPLOY_URL="$${DEPLOY_URL:-$$(minikube service -n $(NAMESPACE) gateway --url | head -n 1)}" \
	  $(BIN)/pytest -q tests/deploy/test_cluster.py

undeploy:
	$(KUBECTL) delete -k k8s/ --ignore-not-found

# The static checks of the container and Kubernetes files (also part of `make test`).
lint-containers: install
	$(BIN)/pytest -q tests/static

stop:
	-pkill -f 'gateway-server $(CURDIR)'
	-pkill -f '$(CURDIR)/scripts/start-serve.sh'
	-pkill -f 'gateway-db purge --every'
	-TMPDIR=$(CURDIR)/run/torchserve/tmp $(BIN)/torchserve --stop

# The OpenID provider of the federation tests (oidc-provider from npm, on Node.js).
OIDC_PROVIDER := devstack/oidc/node_modules/.installed
$(OIDC_PROVIDER): devstack/oidc/package-lock.json
	@command -v npm >/dev/null || { echo "npm is required by the federation tests: apt-get install -y nodejs npm" >&2; exit 1; }
	cd devstack/oidc && npm ci --no-audit --no-fund
	touch $@

test: check-java install $(OIDC_PROVIDER)
	$(BIN)/pytest -q tests --ignore=tests/deploy

# The gateway's logic without a server and without torch (tests/unit): under a minute.
unit: install
	$(BIN)/pytest -q tests/unit

e2e: check-java install $(OIDC_PROVIDER)
	$(BIN)/pytest -q tests/e2e

# Random exploration of the API contract, not part of CI: the contract test with
# FUZZ_RUNS new Schemathesis seeds, each printed; `make fuzz SEEDS="123 456"` repeats
# them. What it finds becomes a fixed example test (tests/e2e/test_hostile_input.py).
FUZZ_RUNS ?= 3
fuzz: check-java install
	@seeds="$${SEEDS:-$$(shuf -i 1-2147483647 -n $(FUZZ_RUNS) | tr '\n' ' ')}"; \
	for seed in $$seeds; do \
	  echo "contract fuzz, seed $$seed"; \
	  CONTRACT_SEED=$$seed $(BIN)/pytest -q tests/e2e/test_contract.py \
	    || { echo "failed with seed $$seed: make fuzz SEEDS=$$seed"; exit 1; }; \
	done

# In-process vs TorchServe vs gateway, side by side; then the hop alone, on a model that
# costs nothing (see bench/README.md).
REQUESTS ?= 400
CONCURRENCY ?= 1,16
bench: check-java install
	$(BIN)/python -m bench.run --requests $(REQUESTS) --concurrency $(CONCURRENCY) --arch $(ARCH)
	$(BIN)/python -m bench.hop

# The gateway past capacity: c=16 (reference), 64 and 128, OVERLOAD_SECONDS each, with
# clients that honour Retry-After and clients that do not; then two users' fairness.
OVERLOAD_SECONDS ?= 60
bench-overload: check-java install
	$(BIN)/python -m bench.overload --seconds $(OVERLOAD_SECONDS)

# Model versions across REPLICAS replicas: register, promote, retire until all follow.
REPLICAS ?= 2
bench-replicas: check-java install
	$(BIN)/python -m bench.replicas --replicas $(REPLICAS)

# The prediction log on a million rows: usage query time, export and purge rates.
bench-log: install
	$(BIN)/python -m bench.log_lifecycle

# Archive signatures: sign, verify and a verified push, for a 45 MB and a 170 MB archive.
bench-signing: install
	$(BIN)/python -m bench.signing

clean:
	rm -rf run $(MODEL_STORE)/*.mar .pytest_cache
