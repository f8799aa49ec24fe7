"""What a user runs to check their own machine: `bnexp bench bn` (bnexp.bench.bn). The goal
tables of the training loop are not shipped: `make bench` runs them from benchmarks/."""
