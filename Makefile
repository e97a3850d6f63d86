# The two commands of the README. Each does its own set-up (idempotent) first.
.PHONY: setup test demo bench clean

setup:
	@bash scripts/bootstrap.sh

test: setup
	@bash scripts/run_tests.sh

demo: setup
	@bash scripts/run_demo.sh

bench: setup
	@bash -c '. scripts/env.sh && monoocc bench'

clean:
	rm -rf build install log .stamps .cache demo_out
