"""`make bench`: the goal tables of bnexp's speed, outside the shipped package (see README.md
here). Run from the checkout's root: `python -m benchmarks.run`."""
