# The two commands a new machine needs (as root; each installs what it needs):
#   make demo   builds two local test hosts, starts a counter on one, migrates it,
#               shows it counting on the other, tears down
#   make test   unit tests and end-to-end tests against real local test hosts
.PHONY: all deps build demo test test-unit test-e2e hosts hosts-down clean

all: build

deps:
	bash test/hosts/install-deps.sh

node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

build: node_modules/.package-lock.json
	npx --no-install tsc -p tsconfig.json

demo: deps build
	bash examples/demo.sh

test: deps build
	node --test --test-concurrency=1 dist/test/unit/ dist/test/e2e/

test-unit: build
	node --test dist/test/unit/

test-e2e: deps build
	node --test --test-concurrency=1 dist/test/e2e/

hosts: deps
	bash test/hosts/setup.sh

hosts-down:
	bash test/hosts/teardown.sh

clean:
	rm -rf dist
