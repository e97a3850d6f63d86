"""Training for monoocc_ros: privileged teacher, distilled student, DDP, exact resume.

Entry points are the ``monoocc train teacher|student|dump-teacher`` subcommands
(:mod:`training.commands`); :func:`training.train.run_training` is the library entry.
"""
