"""The training engine and its trainers: `loop.train(config, workdir)`, `evaluate.evaluate(config,
workdir)`, `sweep.sweep(config, workdir)` (trainers: `loop`, `cached_heads`); every workdir file goes
through `rundir`; model families plug in as tasks (`task.make_task(config)` builds one from
config.model). Submodules are imported on use (see docs/architecture.md, docs/training.md)."""
