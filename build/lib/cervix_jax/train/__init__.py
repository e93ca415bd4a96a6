"""The training engine: `loop.train(config, workdir)`, `evaluate.evaluate(config, workdir)`,
`sweep.sweep(config, workdir)`; tasks plug in through `task.make_task(config)`. Submodules are
imported on use (see docs/training.md)."""
