# The two commands of the README. Each does its own set-up (idempotent) first.
.PHONY: setup test demo bench bench-gpu clean

setup:
	@bash scripts/bootstrap.sh

test: setup
	@bash scripts/run_tests.sh

demo: setup
	@bash scripts/run_demo.sh

bench: setup
	@bash -c '. scripts/env.sh && TCMALLOC_RELEASE_RATE=0 monoocc bench'

bench-gpu: setup
	@bash bench/gpu_check.sh

clean:
	rm -rf build install log .stamps .cache demo_out
