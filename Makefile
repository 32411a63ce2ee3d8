# The two commands a new machine needs (as root; each installs what it needs):
#   make demo   builds two local test hosts, starts a counter on one, migrates it,
#               shows it counting on the other, tears down
#   make test   the lint (formatting and lint rules), unit tests, the fresh-machine check
#               (installation and demo in a clean Debian 12 root), the npm package's install,
#               end-to-end tests against real local test hosts (network namespaces), and the
#               pre-copy tests in two QEMU VMs (Debian's kernel)
.PHONY: all deps build lint demo test test-unit test-e2e test-vm test-fresh hosts hosts-down vm-down clean

all: build

deps:
	bash test/hosts/install-deps.sh

vm-deps:
	bash test/vm/install-deps.sh

node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

build: node_modules/.package-lock.json
	npx --no-install tsc -p tsconfig.json

# Formatting and lint rules (Biome, biome.jsonc), checked without writing anything (errors
# shown; `npx biome check` also lists the warnings); `npm run format`
# writes the formatting and the safe fixes. bin/migrate has no extension, which Biome needs to
# pick a language, so its formatting is checked through stdin.
lint: node_modules/.package-lock.json
	npx --no-install biome check --diagnostic-level=error
	npx --no-install biome format --stdin-file-path=bin/migrate.mjs < bin/migrate | diff -u bin/migrate -

demo: deps build
	bash examples/demo.sh

test: deps vm-deps build lint
	node --test --test-concurrency=1 dist/test/unit/ dist/test/fresh/ dist/test/e2e/ dist/test/vm-e2e/

test-unit: build lint
	node --test dist/test/unit/

test-e2e: deps vm-deps build
	node --test --test-concurrency=1 dist/test/e2e/

test-vm: deps vm-deps build
	node --test dist/test/vm-e2e/

# The fresh-machine check alone (a clean Debian 12 root; debootstrap and zstd come with vm-deps).
test-fresh: vm-deps build
	node --test dist/test/fresh/

hosts: deps
	bash test/hosts/setup.sh

hosts-down:
	bash test/hosts/teardown.sh

vm-down:
	bash test/vm/stop.sh

clean:
	rm -rf dist
