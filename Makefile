# Make targets of the gpuship repository. Each area adds its own target below; keep them independent.
.PHONY: help bench

help:
	@echo "make bench    gpuship vs docker build on every example (BENCH_EXAMPLES=\"numpy-hello conda-env\" to choose);"
	@echo "              writes bench/results.json and the table in docs/benchmarks.md (not part of the tests)"

# The benchmark: set the machine up (scripts/bootstrap.sh), then build each example three ways and measure.
# BENCH_EXAMPLES (default: all eight); BENCH_ARM64=0, BENCH_SERVE=0, BENCH_SLIM=0 skip parts; BENCH_WAYS picks
# gpuship,dockerfile,naive; BENCH_MERGE=1 adds to bench/results.json; BENCH_ARGS passes more options.
bench:
	bash scripts/bootstrap.sh
	uv run --locked python bench/run.py $(BENCH_ARGS)
