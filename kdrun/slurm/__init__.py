"""kdrun on a Slurm cluster: job arrays of worker "pilots" that drain the queue.

Slurm only provides places for workers to run; the database leases stay the one source of
truth. `script` writes the sbatch file, `commands` runs Slurm's client tools, `pilots` keeps
the pilots' rows, and `pilot` is the hook a worker running inside a Slurm job calls.
"""
