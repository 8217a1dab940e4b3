"""`make chaos`: a flash sale and a steady saga under a fault schedule, measured.

schedule.py  the profiles (full, short): load and faults
faults.py    injecting and healing each fault, timed
sampler.py   the outbox backlog, sampled beside the load
figures.py   the figures, the goals and the one line (pure)
runner.py    one run, start to end; plot.py its timeline; __main__.py the CLI
"""
