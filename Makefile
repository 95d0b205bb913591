# The two commands of the README: `make run` and `make test`. Everything else builds on them.
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
PYTHON ?= python3
export PATH := $(BIN):$(PATH)

.PHONY: run test lint install system-packages bench contract new clean push pull remote dag-check plots-template sweep compare report
.PHONY: predict serve register registry-export bench-serving prometheus
.PHONY: consume produce bench-events
.PHONY: monitor simulate bench-monitoring
.PHONY: retrain feedback-loop promote watch online promote-online bench-feedback

run: install                          ## create the venv, install, and run the whole DAG
	dvc repro

test: install system-packages lint     ## lint + the whole test suite
	pytest -n 3

lint: install
	ruff check .
	python -m lifecycle.dag_check

install: $(VENV)/.installed

system-packages:                      ## the servers and browser the tests start (Debian packages)
	bash tools/system-packages.sh

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

bench: install                        ## the DAG vs its floors at 7k and 1M rows (BENCH_ARGS=--10m adds 10M)
	python bench/dag.py $(BENCH_ARGS)

contract: install                     ## draft a data contract from a file: make contract DATA=path [ID=col] [TARGET=col]
	python -m lifecycle.draft_contract '$(DATA)' --output contract.draft.yaml $(if $(ID),--id '$(ID)') $(if $(TARGET),--target '$(TARGET)')

new: install                          ## the template on your table: make new DATA=file TARGET=col [ID=col] [TASK=..] [POSITIVE=..] [SENSITIVE=a,b] [NAME=..]
	@test -n "$(DATA)" -a -n "$(TARGET)" || { echo "usage: make new DATA=file TARGET=column [ID=column] [TASK=binary|multiclass|regression] [POSITIVE=value] [SENSITIVE=col,col] [NAME=name]"; exit 2; }
	python -m lifecycle.new_project '$(DATA)' --target '$(TARGET)' $(if $(ID),--id '$(ID)') $(if $(TASK),--task '$(TASK)') $(if $(POSITIVE),--positive '$(POSITIVE)') $(if $(SENSITIVE),--sensitive '$(SENSITIVE)') $(if $(NAME),--name '$(NAME)')

# DVC remote (README "Remotes"). lifecycle.remote is dvc with SSH host keys checked.
push: install                         ## send data and models to the default DVC remote
	python -m lifecycle.remote push

pull: install                         ## check out what the remote has; fails naming what it lacks
	python -m lifecycle.remote pull

remote: install                       ## this clone only: make remote URL=s3://bucket/path
	@test -n "$(URL)" || { echo "usage: make remote URL=s3://bucket/path (or ssh://host/path)"; exit 2; }
	dvc remote modify --local storage url '$(URL)'

dag-check: install                    ## dvc.yaml against the code: deps, params, outputs
	python -m lifecycle.dag_check

plots-template: install               ## re-vendor vega into .dvc/plots/offline.html (needs npm)
	python tools/offline_plots_template.py

# Experiments and the pull-request report (docs/experiments.md)
JOBS ?= 2
BASE ?= HEAD
SWEEP ?= sweep.yaml
sweep: install                        ## run the grid in $(SWEEP) (or GRID="a=1,2 b=x,y") on JOBS queue workers
	python -m lifecycle.experiments sweep --grid-file '$(SWEEP)' --jobs $(JOBS) $(if $(GRID),--grid '$(GRID)') $(if $(TARGETS),--targets $(TARGETS))

compare: install                      ## leaderboard of this commit's experiments, best first (Markdown)
	python -m lifecycle.experiments compare

report: install                       ## report.md + report_figures/: workspace vs BASE; exit 1 on a broken gate
	python -m lifecycle.report --base '$(BASE)' --output report.md --figures report_figures

# Serving (docs/serving.md): batch scoring, the HTTP API, the inference registry
PORT     ?= 8000
BUNDLE   ?= models/bundle
DEPLOY   ?=
REGISTRY ?= sqlite:///data/registry/inference.sqlite
predict: install                      ## score a file: make predict INPUT=in.csv OUTPUT=scores.parquet
	@test -n "$(INPUT)" -a -n "$(OUTPUT)" || { echo "usage: make predict INPUT=file OUTPUT=file (.csv, .parquet, .jsonl)"; exit 2; }
	python -m lifecycle.serving predict --bundle '$(BUNDLE)' --input '$(INPUT)' --output '$(OUTPUT)'

serve: install                        ## the HTTP API on 127.0.0.1:$(PORT) (DEPLOY=deploy/canary.yaml for a strategy)
	python -m lifecycle.serving serve --port $(PORT) --registry '$(REGISTRY)' $(if $(DEPLOY),--deployment '$(DEPLOY)',--bundle '$(BUNDLE)')

VERSION ?= v1.0.0
STAGE   ?= prod
register: install                     ## the committed bundle as a GTO version in STAGE: make register VERSION=v1.0.0 STAGE=prod
	@git diff --quiet HEAD -- dvc.lock || { echo "register: dvc.lock has uncommitted changes: commit them first (the version is the commit's bundle)"; exit 2; }
	gto register churn-model HEAD --version $(VERSION)
	gto assign churn-model --version $(VERSION) --stage $(STAGE)

registry-export: install              ## the inference registry (predictions + feedback) to Parquet
	python -m lifecycle.serving export --registry '$(REGISTRY)' --output $(or $(OUTPUT),data/registry/predictions.parquet)

bench-serving: install                ## serving latency/throughput vs predict_proba and mlflow serve
	python bench/serving.py

prometheus:                           ## Prometheus on 127.0.0.1:9090 scraping `make serve`, with deploy/prometheus rules
	prometheus --config.file=deploy/prometheus/prometheus.yml --storage.tsdb.path=data/prometheus \
	  --web.listen-address=127.0.0.1:9090

# Events (README "Events"): Redis Streams in, answers out, every event recorded once. The
# server: REDIS_URL in the environment (default redis://127.0.0.1:6379/0); write its password
# as ${REDIS_PASSWORD} in single quotes, so that it is read from the environment, never shown.
consume: install                      ## the events worker: lifecycle:requests -> lifecycle:answers
	python -m lifecycle.events consume --bundle '$(BUNDLE)' --registry '$(REGISTRY)' $(ARGS)

produce: install                      ## send a file's rows as request events: make produce INPUT=in.csv
	@test -n "$(INPUT)" || { echo "usage: make produce INPUT=file (.csv, .parquet, .jsonl)"; exit 2; }
	python -m lifecycle.events produce --input '$(INPUT)' --columns-of '$(BUNDLE)'

bench-events: install                 ## events/s and latency over Redis Streams vs the HTTP API
	python bench/events.py

# Monitoring (README "Monitoring"): the registry judged window by window; the traffic simulator
SHIFT          ?= none
RATE           ?= 100
FEEDBACK_DELAY ?= 0
ROWS           ?= 1000
URL            ?= http://127.0.0.1:$(PORT)
monitor: install                      ## export the registry, judge its windows (monitoring/, a DVC project of its own); exit 1 on an alert
	python -m lifecycle.serving export --registry '$(REGISTRY)' --output data/registry/predictions.parquet
	dvc --cd monitoring repro
	python -m lifecycle.monitoring gate monitoring/out/results.json

simulate: install                     ## replay held-out rows through the API: make simulate SHIFT=price RATE=100 FEEDBACK_DELAY=5
	python -m lifecycle.monitoring.simulate --url '$(URL)' --shift $(SHIFT) --rate $(RATE) --feedback-delay $(FEEDBACK_DELAY) --rows $(ROWS) $(if $(CUSTOMERS),--customers $(CUSTOMERS))

bench-monitoring: install             ## alarm rates per shift x check, label-free coverage, scale; Evidently side by side
	python bench/monitoring_power.py

# The feedback loop (README "Feedback loop", docs/feedback.md)
TRAIN_ON ?= both
retrain: install                      ## registry -> DVC experiment on original + production rows -> the gate (metrics/promotion.json); exit 2: champion kept
	python -m lifecycle.feedback --registry '$(REGISTRY)' retrain --train-on $(TRAIN_ON) --mode $(or $(MODE),full)

promote: install                      ## register the judged challenger as the next version in prod (SERVER=url: the running server loads it and switches)
	python -m lifecycle.feedback $(if $(SERVER),--server '$(SERVER)') promote

watch: install                        ## the promoted version's first window vs the old one; rolls back when worse: make watch NEW=v1.1.0 OLD=v1.0.0
	python -m lifecycle.feedback --registry '$(REGISTRY)' $(if $(SERVER),--server '$(SERVER)') watch --new $(NEW) --old $(OLD)

online: install                       ## the online learner in shadow over the registry: resume its checkpoint, learn, judge (metrics/online.json; exit 2: not promotable)
	python -m lifecycle.feedback --registry '$(REGISTRY)' online

promote-online: install               ## the shadow learner, when it wins: bundle (train.mode online), the whole gate, GTO prod, SERVER=url switches (SET=key=value: a packaging param)
	python -m lifecycle.feedback --registry '$(REGISTRY)' $(if $(SERVER),--server '$(SERVER)') online --promote $(if $(SET),--set '$(SET)')

feedback-loop: install                ## for cron: monitor; on an alert retrain, judge and promote (TRIGGER=always: on a schedule)
	python -m lifecycle.feedback --registry '$(REGISTRY)' $(if $(SERVER),--server '$(SERVER)') loop --trigger $(or $(TRIGGER),alert) --promote --train-on $(TRAIN_ON) --mode $(or $(MODE),full)

bench-feedback: install               ## the gate's false-promotion rate and power over seeds; full vs incremental vs online
	python bench/feedback_gate.py
	python bench/feedback_modes.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
